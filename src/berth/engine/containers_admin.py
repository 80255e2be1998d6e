"""What changes a container without starting or stopping it: pause and unpause (the cgroup
freezer) and rename, over ``containers.ContainerManager``.

Rules:
- Pause freezes the container's cgroup from berthd with the runtime's own verbs on the
  supervisor's record (``runtime.container.pause``/``resume``); ``State.Paused`` and the
  status ``paused`` are saved in the record before the event goes out. dockerd's 409s: "is not
  running", "is already paused", "is restarting, wait until the container is running", "is not
  paused". A paused container that is signalled (stop, kill, rm -f) is thawed after the signal,
  so that it acts on it (``thaw``).
- Rename checks and takes the new name under the manager's create lock (the lock every name
  check holds), then saves the record: an invalid name is 400, a taken one 409, dockerd's texts
  prefixed with "Error when allocating new name: "; the ``rename`` event carries ``oldName``.
"""

from __future__ import annotations

import asyncio
import logging

from berth.engine.containers_state import Record, check_name
from berth.errors import Conflict, InvalidArgument, NotFound
from berth.runtime import container as runtime_container
from berth.runtime import store as runtime_store
from berth.spec.state import Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from berth.engine.containers import ContainerManager

log = logging.getLogger(__name__)


def _freezer(m: ContainerManager, verb: str, cid: str) -> None:
    """The runtime's pause/resume on the supervisor's record (it freezes the cgroup). A resume
    of a container no longer frozen (a kill of all its processes thaws it) has nothing to do."""
    st = runtime_store.Store(m.supervisor_root)
    if verb == "pause":
        runtime_container.pause(st, cid)
    elif runtime_container.load(st, cid).status == Status.PAUSED:
        runtime_container.resume(st, cid)


async def pause(m: ContainerManager, ref: str) -> None:
    rec = m.get(ref)
    async with m.lock_of(rec.id):
        if m.records.get(rec.id) is not rec:
            raise NotFound(f"No such container: {ref}")
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if rec.paused:
            raise Conflict(f"Container {rec.id} is already paused")
        if rec.restarting:
            raise Conflict(f"Container {rec.id} is restarting, wait until the container is running")
        await asyncio.to_thread(_freezer, m, "pause", rec.id)
        rec.state.update(Status="paused", Paused=True)
        rec.save(m.bundle(rec.id))
    m.emit(rec, "pause")


async def unpause(m: ContainerManager, ref: str) -> None:
    rec = m.get(ref)
    if not rec.paused:
        raise Conflict(f"Container {rec.id} is not paused")
    await thaw(m, rec, event=True)


async def thaw(m: ContainerManager, rec: Record, event: bool = False) -> None:
    """Unpause ``rec`` if it is paused (and still has its process); the ``unpause`` event is
    the user's unpause's only (dockerd shows none when a kill or stop thaws a container)."""
    async with m.lock_of(rec.id):
        if not rec.paused or not rec.has_process:
            return
        await asyncio.to_thread(_freezer, m, "resume", rec.id)
        rec.state.update(Status="running", Paused=False)
        rec.save(m.bundle(rec.id))
    if event:
        m.emit(rec, "unpause")


async def rename(m: ContainerManager, ref: str, new_name: str) -> None:
    if not ref or not new_name:
        raise InvalidArgument("Neither old nor new names may be empty")
    rec = m.get(ref)
    wanted = new_name if new_name.startswith("/") else "/" + new_name
    async with m.names_lock:
        old = rec.name
        if old == wanted:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        try:
            check_name(wanted)
        except InvalidArgument as e:
            raise InvalidArgument(f"Error when allocating new name: {e.message}") from None
        m.check_name_free(wanted, "Error when allocating new name: ")
        rec.name = wanted
        try:
            rec.save(m.bundle(rec.id))
        except BaseException:
            rec.name = old
            raise
    m.emit(rec, "rename", oldName=old)
    log.info("container %s: renamed from %s to %s", rec.id, old, wanted)
