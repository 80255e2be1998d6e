"""The engine: berthd, the Docker Engine API over the image store and the runtime.

Rules:
- Imports ``berth.image``, ``berth.runtime``, ``berth.spec`` and ``berth.errors``; nothing below
  imports the engine (import-linter checks it). The cluster reaches it only through
  ``engine.client``.
- asyncio throughout; blocking work (the image store, archives, the runtime) runs in worker
  threads (``asyncio.to_thread``), never on the event loop.
- Every path comes from one ``paths.Paths(data_root)``, so several daemons run side by side
  and tests use temp dirs.
- HTTP is spoken by the ``api*`` modules only: ``api`` is the application (routes with and
  without the ``/v1.xx`` prefix, the headers on every response, ping, logging, JSON helpers),
  ``api_<area>`` the handlers, ``filters`` the ``filters`` query, and ``api_errors`` the ONE
  place Berth's errors become status codes and ``{"message": ...}`` bodies. What the docker CLI
  and docker-py really send is in ``shared/docker-cli-contract.md``: follow it.
- Image writes (pull, load, import, build) and garbage collection are serialised by one lock,
  as ``image.store`` requires.
- ``logging.getLogger(__name__)``; each request gets an id that is in every message about it.
"""
