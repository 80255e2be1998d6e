"""The OCI distribution protocol, both ends: a registry server over the image store's content
store, and the pull/push clients the engine and the CLI use.

Rules: this layer sits between the engine and the image store (it imports ``berth.image``,
``berth.spec`` and ``berth.errors``, never the engine or the CLI).
"""
