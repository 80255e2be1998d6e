"""The networking of a build's RUN step (``docker build --network``): a sandbox like a
container's, keyed by the step's id, made before the step runs and released when it ends.

Rules:
- Modes (``networkmode`` of ``POST /build``): ``default``/``bridge`` (the default bridge,
  ``berth0``, made on demand as for a container, NAT'ed out), ``none`` (the runtime's own
  namespace, lo up, nothing pinned), ``host`` (berthd's namespace, nothing made) or a user
  network's name or id (on it, with the embedded DNS). ``container:<id>`` is refused, as an
  unknown network is (404), before anything is made (``plan``).
- The sandbox is made and released by the container's code paths (``_attach_locked``,
  ``_release_locked``, under the manager's lock, hooks told): a pinned namespace at
  ``<run>/netns/<step id>``, one veth on the bridge, an address from IPAM; while the step runs
  it is one of ``NetworkManager.sandboxes`` with no container record (it holds its network as
  an active endpoint; the DNS answers it but never names it). A failure in ``attach`` releases
  what it made before it raises; ``release`` is idempotent.
- The step's ``hostname``, ``hosts`` (its hostname, the step id's first 12 characters, on its
  address) and ``resolv.conf`` (the default bridge's rules: the host's, loopback nameservers
  dropped; the embedded DNS on a user network; the host's as they are with ``host``) are
  written in the directory the caller gives (the step's bundle), with ``network.json``
  (the veth's name, saved before the veth is made) when it has endpoints.
- A daemon killed mid-step leaves a pin and a veth nobody owns: the networks' sweep at the
  next start (``NetworkManager.reconcile``) removes them, as it does a container's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from berth.engine.network_sandbox import Sandbox
from berth.errors import InvalidArgument

if TYPE_CHECKING:
    from berth.engine.networks import NetworkManager


@dataclass(frozen=True)
class StepSandbox:
    """What a build step's spec takes from its networking."""

    network_mode: str  # the spec's HostConfig.NetworkMode: bridge, none, host or a network
    netns_path: str | None  # the pinned namespace the step joins; None: berthd's ("host")
    mounts: tuple[dict[str, Any], ...]  # /etc/hostname, /etc/hosts and /etc/resolv.conf


def plan(m: NetworkManager, step_id: str, mode: str) -> Sandbox:
    """The step's sandbox for ``mode``, validated (nothing is made)."""
    if mode.startswith("container:"):
        raise InvalidArgument(
            f"networkmode={mode!r}: a build step cannot join a container's network namespace"
        )
    return m.plan(step_id, {"HostConfig": {"NetworkMode": mode or "default"}})


async def attach(m: NetworkManager, step_id: str, mode: str, directory: str) -> StepSandbox:
    sandbox = plan(m, step_id, mode)
    rec_like: dict[str, Any] = {"Config": {"Hostname": step_id[:12]}}
    async with m.lock:
        if not sandbox.own_netns:  # host: berthd's namespace, only the files
            await asyncio.to_thread(m.write_files, sandbox, directory, rec_like)
        else:
            m.sandboxes[step_id] = sandbox
            try:
                await m._attach_locked(step_id, rec_like, sandbox, directory)
            except BaseException:
                await m._release_locked(sandbox)
                m.sandboxes.pop(step_id, None)
                await m.retired(container=step_id)
                raise
    mounts = tuple(m.file_mounts(sandbox, directory, ()))
    return StepSandbox(sandbox.mode, m.spec_namespace(sandbox), mounts)


async def release(m: NetworkManager, step_id: str) -> None:
    sandbox = m.sandboxes.get(step_id)
    if sandbox is None:
        return
    async with m.lock:
        await m._release_locked(sandbox)
        m.sandboxes.pop(step_id, None)
