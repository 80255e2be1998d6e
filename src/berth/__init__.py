"""Berth: a container platform — OCI runtime, image store, Docker-compatible engine, cluster."""

__version__ = "0.1.0"
