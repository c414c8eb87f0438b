"""Alembic scripts; a package so that setuptools ships them with the code."""
