"""Differential compatibility scenarios; see framework.py and ../README.md."""
