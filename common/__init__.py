"""What the gateway, the CDC bridge and the monolith share, and nothing else: the YAML config
reader that reports every error with its line (`validation`), commit positions
(`positions`: what the bridge has applied, read by the gateway's read-your-writes), and the
dev capture's change table (`change_table`: written by the capture, read by the monolith to
report where its writes committed).

Imports nothing of this project: gateway/, cdc/ and the services build on it and never on
each other.
"""
