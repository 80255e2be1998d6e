"""Restart policies (``HostConfig.RestartPolicy``): validation, the decision on an exit, and the
back-off between restarts — the rules of moby's ``restartmanager``, as plain values.

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
  ``unless-stopped`` (not stopped by the user) or ``on-failure`` (failed, retries left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from berth.errors import InvalidArgument

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
