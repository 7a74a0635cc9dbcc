"""Edgeplane's cloud control plane: everything the Chalice app wires together."""

__version__ = "0.1.0"
