"""Images: the content store, references, snapshots, layers, images, builds, registry client.

Rules:
- ``image`` imports only ``berth.spec`` and ``berth.errors``, never ``berth.runtime`` (and the
  runtime never imports ``image``): import-linter checks both directions. Whatever a build
  needs from the runtime (running a RUN step) is handed in by the engine above.
- Standard library only.
- The content store is the one place blobs are written; everything else reads them by digest.
  Writes go ingest -> verify size and digest -> fsync -> atomic rename, so a blob on disk is
  always whole and always matches its name.
- Digests and references are parsed at the edge (``digest.parse``, ``reference.parse``) and
  errors name the value at fault (``InvalidArgument``) or the object missing (``NotFound``).
- Every path comes from a root handed in by the caller, so tests use temporary directories.
"""
