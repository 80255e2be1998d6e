"""Restart policies (``HostConfig.RestartPolicy``): validation, the decision on an exit, the
back-off between restarts — the rules of moby's ``restartmanager`` as plain values — and the
steps ``containers.ContainerManager`` takes with them (functions over the manager, which calls
them under its rules: one lock per container, every change saved before anyone is told).

Rules:
- Names: ``no`` (or ``""``), ``always``, ``unless-stopped``, ``on-failure[:max]``; a
  ``MaximumRetryCount`` only with ``on-failure`` and never negative; ``AutoRemove`` only with
  no policy. Refusals are ``InvalidArgument`` with dockerd's texts.
- On an exit: nothing restarts after the user stopped or killed the container (until the user
  starts it again); ``always`` restarts, ``unless-stopped`` too unless the user stopped it,
  ``on-failure`` on a non-zero exit while ``RestartCount`` is under the maximum (0: no maximum).
- The delay before a restart starts at 100 ms and doubles at each restart up to one minute; a
  run of 10 s or more resets it.
- At daemon start, a container that was started before comes back if ``always``,
  ``unless-stopped`` (not stopped by the user) or ``on-failure`` (failed, retries left), with a
  user's start (its RestartCount starts again, as dockerd's restore does); a restart that was
  waiting when the daemon stopped (status ``restarting``, saved) happens at once.
- While it waits, a container is ``restarting``: ``Running`` and ``Restarting`` true, no pid,
  no supervisor record; a user's stop, kill or ``rm -f`` cancels the wait and leaves it
  exited (``cancel_restart``).
"""

from __future__ import annotations

import asyncio
import logging
import signal as signals
from dataclasses import dataclass
from typing import Any

from berth.engine.containers_state import ZERO_TIME, Record, parse_signal
from berth.errors import BerthError, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from berth.engine.containers import ContainerManager, Live

log = logging.getLogger(__name__)

NO, ALWAYS, ON_FAILURE, UNLESS_STOPPED = "no", "always", "on-failure", "unless-stopped"
FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0


@dataclass(frozen=True)
class RestartPolicy:
    name: str = NO
    maximum_retry_count: int = 0

    @staticmethod
    def of(host_config: dict[str, Any]) -> RestartPolicy:
        """The policy of a stored HostConfig (validated at create)."""
        raw = host_config.get("RestartPolicy") or {}
        return RestartPolicy(str(raw.get("Name") or NO), int(raw.get("MaximumRetryCount") or 0))

    @staticmethod
    def validate(host_config: dict[str, Any]) -> RestartPolicy:
        """The create request's policy, or dockerd's 400."""
        raw = host_config.get("RestartPolicy") or {}
        if not isinstance(raw, dict):
            raise InvalidArgument(f"invalid restart policy: {raw!r}")
        name = raw.get("Name") or ""
        count = raw.get("MaximumRetryCount") or 0
        if not isinstance(name, str) or not isinstance(count, int) or isinstance(count, bool):
            raise InvalidArgument(f"invalid restart policy: {raw!r}")
        if name in (ALWAYS, UNLESS_STOPPED, NO):
            if count != 0:
                message = "invalid restart policy: maximum retry count can only be used with"
                message += " 'on-failure'"
                if count < 0:
                    message += " and cannot be negative"
                raise InvalidArgument(message)
        elif name == ON_FAILURE:
            if count < 0:
                raise InvalidArgument(
                    "invalid restart policy: maximum retry count cannot be negative"
                )
        elif name != "":
            raise InvalidArgument(
                f"invalid restart policy: unknown policy '{name}'; use one of '{NO}',"
                f" '{ALWAYS}', '{ON_FAILURE}', or '{UNLESS_STOPPED}'"
            )
        policy = RestartPolicy(name or NO, count)
        if host_config.get("AutoRemove") and not policy.none:
            raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
        return policy

    @property
    def none(self) -> bool:
        return self.name == NO

    def on_exit(self, exit_code: int, manually_stopped: bool, restart_count: int) -> bool:
        """Whether an exit the user did not ask for is followed by a restart; also whether a
        stopped container that ran before comes back when the daemon starts (``always`` then
        even after a user's stop: Docker's documented difference from ``unless-stopped``)."""
        if self.name == ALWAYS:
            return True
        if self.name == UNLESS_STOPPED:
            return not manually_stopped
        if self.name == ON_FAILURE:
            retries_left = self.maximum_retry_count == 0 or restart_count < self.maximum_retry_count
            return retries_left and exit_code != 0
        return False


class Backoff:
    """The delay before the next restart (moby's restartmanager timeout)."""

    def __init__(self) -> None:
        self.delay = 0.0

    def next(self, ran_for: float) -> float:
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        self.delay = FIRST_DELAY if self.delay == 0 else min(self.delay * 2, MAX_DELAY)
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


# --------------------------------------------------------------------------- the manager's steps


async def restart_later(m: ContainerManager, cid: str, delay: float) -> None:
    """The policy's start, ``delay`` s after an exit (unless ``cancel_restart`` came first)."""
    await asyncio.sleep(delay)
    rec = m.records.get(cid)
    if rec is None:
        return
    live = m.live_of(cid)
    async with live.lock:
        if m.records.get(cid) is not rec or not rec.restarting:
            return
        live.restart_task = None
        try:
            await m._start_locked(rec, live)
        except InvalidArgument as e:  # recorded by _start_failed: it stays exited
            log.warning("container %s: restart failed: %s", cid, e.message)
        except (BerthError, OSError) as e:  # before the supervisor (its rootfs): exited too
            log.error("container %s: restart failed: %s", cid, e)
            rec.state.update(Status="exited", Running=False, Restarting=False, Error=str(e))
            rec.save(m.bundle(cid))
            live.exits += 1
    await live.notify()


async def restart_at_open(m: ContainerManager) -> None:
    """After a daemon start: the restarts that were waiting, and the stopped containers that
    their policy brings back."""
    for rec in list(m.records.values()):
        if rec.restarting:
            m.live_of(rec.id).restart_task = m._spawn(restart_later(m, rec.id, 0.0))
            continue
        policy = RestartPolicy.of(rec.host_config)
        if (
            rec.running
            or rec.status not in ("exited", "created")
            or rec.state["StartedAt"] == ZERO_TIME
            or not policy.on_exit(rec.state["ExitCode"], rec.manually_stopped, rec.restart_count)
        ):
            continue
        log.info("container %s: started again at daemon start (%s)", rec.id, policy.name)
        try:
            await m.start(rec.id)
        except (BerthError, OSError) as e:
            log.warning("container %s: no start at daemon start: %s", rec.id, e)


def stopped_by_user(m: ContainerManager, rec: Record, live: Live, sig: int | None = None) -> None:
    """A stop, kill or forced removal: no restart at this exit (dockerd's ExitOnNext; a kill
    with a signal other than the container's StopSignal keeps the policy), and
    ``unless-stopped`` stays stopped, even at daemon start, until the next start."""
    stop_signal = rec.config.get("StopSignal")
    if sig is None or sig == signals.SIGKILL or not stop_signal:
        live.exit_on_next = True
    else:
        live.exit_on_next = live.exit_on_next or parse_signal(stop_signal) == sig
    rec.manually_stopped = True
    rec.save(m.bundle(rec.id))


async def cancel_restart(m: ContainerManager, rec: Record, live: Live) -> bool:
    """If ``rec`` waits to restart: it will not, it is exited now (True), which ends the
    waits for its next exit (with the last exit's code)."""
    async with live.lock:
        if not rec.restarting:
            return False
        if live.restart_task is not None:
            live.restart_task.cancel()
            live.restart_task = None
        rec.state.update(Status="exited", Running=False, Restarting=False)
        rec.save(m.bundle(rec.id))
        live.exit_code, live.error = int(rec.state["ExitCode"]), ""
        live.exits += 1
    await live.notify()
    return True
