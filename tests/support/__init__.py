"""Helpers the tests share: servers on loopback, raw-socket clients, a browser."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
