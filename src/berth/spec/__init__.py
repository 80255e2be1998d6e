"""Pure data, stdlib only: the OCI runtime config, runtime state and lifecycle, image types.

Rules: no I/O beyond parsing what callers hand in, no imports from other Berth layers except
``berth.errors``; every type is a frozen dataclass with ``from_json`` (and ``to_json`` where
Berth writes the document).
"""
