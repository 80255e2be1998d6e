"""engine.network_sandbox: which sandboxes berthd pins, and what network.json keeps of it."""

from __future__ import annotations

from pathlib import Path

from berth.engine.network_sandbox import Sandbox


def test_who_is_pinned() -> None:
    assert Sandbox("a", "bridge").pinned and Sandbox("a", "mynet").pinned
    assert not Sandbox("a", "none", runtime_netns=True).pinned
    for mode in ("host", "container:abc"):
        assert not Sandbox("a", mode).own_netns and not Sandbox("a", mode).pinned
    assert Sandbox("a", "none", runtime_netns=True).own_netns  # its own, the runtime's


def test_the_choice_is_kept_and_an_older_file_means_pinned(tmp_path: Path) -> None:
    Sandbox("a", "none", runtime_netns=True).save(str(tmp_path), durable=False)
    loaded = Sandbox.load(str(tmp_path))
    assert loaded is not None and loaded.runtime_netns and not loaded.pinned
    older = {"ContainerID": "a", "Mode": "none", "Endpoints": [], "SandboxID": "", "Active": False}
    assert Sandbox.from_json(older).pinned  # made when every "none" namespace was pinned
