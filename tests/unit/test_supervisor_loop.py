"""The supervisor's event loop skips events whose fd an earlier callback of the batch closed."""

from __future__ import annotations

import os
import selectors

from berth.engine.supervisor import stale_event


def test_an_event_for_a_closed_or_reused_fd_is_stale() -> None:
    sel = selectors.DefaultSelector()
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        key = sel.register(r, selectors.EVENT_READ, "old")
        [(event, _mask)] = sel.select(0)
        assert not stale_event(sel, event)
        sel.unregister(r)
        assert stale_event(sel, event)  # closed by an earlier callback
        sel.register(r, selectors.EVENT_READ, "new")
        assert stale_event(sel, key)  # the number came back for another stream
    finally:
        sel.close()
        os.close(r)
        os.close(w)
