"""Healthchecks: ``Config.Healthcheck`` (the image's HEALTHCHECK merged in at create) run by
berthd as execs in the running container, and ``State.Health`` kept in the container record.

Rules (dockerd's):
- Test ``["NONE"]`` disables the check; ``["CMD", args...]`` runs args; ``["CMD-SHELL", cmd]``
  runs ``/bin/sh -c cmd``; no Test (or an empty one) means no check.
- Durations are nanoseconds; 0 means the default: Interval 30s, Timeout 30s, StartPeriod 0,
  StartInterval 5s (the interval while in the start period and still "starting"), Retries 3.
- At each start ``State.Health`` is reset to "starting" with a FailingStreak of 0 (its Log
  is kept, as dockerd keeps it); a probe exiting 0 makes it "healthy" with a streak of 0; a
  failure adds one to FailingStreak (except while "starting" in the start period) and at
  Retries it is "unhealthy". A probe that outlives Timeout is killed and logged as ExitCode
  -1, "Health check exceeded timeout (…)"; Output keeps the first 4096 bytes. Log keeps the
  last 5 results (Start, End, ExitCode, Output). The record is saved after each change.
- A change of Status is a ``health_status: <status>`` event of the container, as dockerd's;
  the monitor of a container ends at its exit or removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

from berth.engine.containers import ContainerManager
from berth.engine.containers_state import Record, now_rfc3339
from berth.engine.execs import ExecManager
from berth.errors import BerthError

log = logging.getLogger(__name__)

SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
LOG_ENTRIES = 5
MAX_OUTPUT = 4096


@dataclass(frozen=True)
class Check:
    """A container's healthcheck, defaults filled in (seconds)."""

    args: list[str]
    interval: float
    timeout: float
    start_period: float
    start_interval: float
    retries: int

    @staticmethod
    def of(config: dict[str, Any]) -> Check | None:
        """The check ``Config.Healthcheck`` asks for, or None (none, or ``NONE``)."""
        hc = config.get("Healthcheck") or {}
        test = [str(t) for t in hc.get("Test") or []]
        if not test or test[0] == "NONE":
            return None
        if test[0] == "CMD-SHELL":
            args = ["/bin/sh", "-c", " ".join(test[1:])]
        elif test[0] == "CMD":
            args = test[1:]
        else:
            log.warning("healthcheck: unknown Test kind %r: no check", test[0])
            return None
        if not args:
            return None

        def seconds(key: str, default: int) -> float:
            value = hc.get(key) or 0
            return (value if isinstance(value, int) and value > 0 else default) / SECOND

        retries = hc.get("Retries") or 0
        return Check(
            args=args,
            interval=seconds("Interval", DEFAULT_INTERVAL),
            timeout=seconds("Timeout", DEFAULT_TIMEOUT),
            start_period=seconds("StartPeriod", 0),
            start_interval=seconds("StartInterval", DEFAULT_START_INTERVAL),
            retries=retries if isinstance(retries, int) and retries > 0 else DEFAULT_RETRIES,
        )


def _duration_text(seconds: float) -> str:
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def next_interval(health: dict[str, Any], check: Check, in_start_period: bool) -> float:
    """Seconds until the next probe."""
    if in_start_period and health.get("Status") == "starting":
        return check.start_interval
    return check.interval


def record_result(
    health: dict[str, Any], check: Check, result: dict[str, Any], in_start_period: bool
) -> str:
    """Fold one probe's result into ``State.Health``; its new Status."""
    log_entries = [*health.get("Log", []), result][-LOG_ENTRIES:]
    health["Log"] = log_entries
    if result["ExitCode"] == 0:
        health["Status"] = "healthy"
        health["FailingStreak"] = 0
    elif not (in_start_period and health.get("Status") == "starting"):
        health["FailingStreak"] = int(health.get("FailingStreak", 0)) + 1
        if health["FailingStreak"] >= check.retries:
            health["Status"] = "unhealthy"
    return str(health["Status"])


class HealthMonitor:
    """One probing task per running container that has a check."""

    def __init__(
        self,
        containers: ContainerManager,
        execs: ExecManager,
    ) -> None:
        self.containers = containers
        self.execs = execs
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def open(self) -> None:
        """Follow the containers' starts and exits; check the ones running already."""
        self.containers.started_hooks.append(self.started)
        self.containers.exited_hooks.append(self.stopped)
        for rec in self.containers.records.values():
            if rec.running:
                self.started(rec, reset=False)

    async def close(self, _app: object = None) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()

    def started(self, rec: Record, reset: bool = True) -> None:
        check = Check.of(rec.config)
        if check is None:
            return
        if reset or "Health" not in rec.state:
            kept = (rec.state.get("Health") or {}).get("Log") or []
            rec.state["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": kept}
            rec.save(self.containers.bundle(rec.id))
        self.stopped(rec)
        started = time.monotonic()
        self.tasks[rec.id] = asyncio.create_task(self._monitor(rec, check, started))

    def stopped(self, rec: Record) -> None:
        task = self.tasks.pop(rec.id, None)
        if task is not None:
            task.cancel()

    async def _monitor(self, rec: Record, check: Check, started: float) -> None:
        while True:
            in_start_period = time.monotonic() - started < check.start_period
            await asyncio.sleep(
                next_interval(rec.state.get("Health") or {}, check, in_start_period)
            )
            if not rec.running or self.containers.records.get(rec.id) is not rec:
                return
            in_start_period = time.monotonic() - started < check.start_period
            try:
                result = await self._probe(rec, check)
            except BerthError as e:  # the container stopped meanwhile, most likely
                log.debug("container %s: healthcheck not run: %s", rec.id, e.message)
                continue
            health = rec.state.setdefault("Health", {"Status": "starting", "FailingStreak": 0})
            before = health.get("Status")
            status = record_result(health, check, result, in_start_period)
            if rec.running and self.containers.records.get(rec.id) is rec:
                rec.save(self.containers.bundle(rec.id))
            if status != before:
                log.info("container %s: health %s -> %s", rec.id, before, status)
                self.containers.emit(rec, f"health_status: {status}")

    async def _probe(self, rec: Record, check: Check) -> dict[str, Any]:
        body = {"Cmd": check.args, "AttachStdout": True, "AttachStderr": True}
        ex = self.execs.create(rec.id, body, keep=False)
        start = now_rfc3339()
        output = b""

        async def collect() -> None:
            nonlocal output
            async for _stream, data in await self.execs.run(ex.id):
                if len(output) < MAX_OUTPUT:
                    output = (output + data)[:MAX_OUTPUT]

        try:
            await asyncio.wait_for(collect(), check.timeout)
        except TimeoutError:
            with contextlib.suppress(BerthError):
                await self.execs.sup.kill(rec.id, signal.SIGKILL, exec_id=ex.id)
            self.execs.forget(ex.id)
            text = f"Health check exceeded timeout ({_duration_text(check.timeout)})"
            return {"Start": start, "End": now_rfc3339(), "ExitCode": -1, "Output": text}
        except BaseException:  # cancelled (the container stopped) or failed: not kept
            self.execs.forget(ex.id)
            raise
        code = ex.exit_code if ex.exit_code is not None else -1
        return {
            "Start": start,
            "End": now_rfc3339(),
            "ExitCode": code,
            "Output": output.decode("utf-8", "replace"),
        }
