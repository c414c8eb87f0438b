"""The first service extracted from the monolith: product search, on its own database."""
