"""Image endpoints (filled in below)."""

from __future__ import annotations

from berth.engine import api

ROUTES: list[api.Route] = []
