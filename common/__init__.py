"""What the gateway and the CDC bridge share, and nothing else: the YAML config reader that
reports every error with its line (`validation`), and commit positions (`positions`).

Imports nothing of this project: gateway/ and cdc/ both build on it and never on each other.
"""
