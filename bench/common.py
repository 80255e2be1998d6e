"""Shared helpers for Berth's benchmarks: timed spawning, statistics, /proc readers, tables.

Timing: `Spawner.run` starts a command with ``os.posix_spawn`` (vfork + exec, so the size of
the benchmarking process does not matter), in its own process group (Ctrl-C on the terminal
reaches the benchmark, not the measured command), with stdin on /dev/null and stdout/stderr
in scratch *files* (a detached container inherits them; a pipe would never see EOF). The
clock runs from just before the spawn to the moment the process exits (a pidfd turns
readable); a command that overruns its timeout has its process group killed.

Peak RSS: ``ru_maxrss`` from ``wait4`` is NOT the runtime's own peak when the parent is a
Python process: at exec the kernel records the pre-exec address space's high-water mark in
the new program's ``maxrss`` (with vfork that address space is the benchmark's own, ~9 MB).
`peak_rss_argv` therefore wraps a command in GNU time (a small C program that forks, so the
floor is its ~1 MB) and `read_peak_rss` reads the result back. The value is still a maximum
over the command and every descendant it reaped itself, never a sum.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

GNU_TIME = "/usr/bin/time"
MARKER_BEGIN = "<!-- {key}:begin -->"
MARKER_END = "<!-- {key}:end -->"


# --------------------------------------------------------------------------- spawning


@dataclass(frozen=True)
class Call:
    """The outcome of one command: wall time, exit status (or -signal), captured output."""

    argv: tuple[str, ...]
    ms: float
    status: int
    maxrss_kb: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out

    def error_text(self, max_lines: int = 12) -> str:
        """A one-paragraph account of a failure, for reports."""
        how = "timed out" if self.timed_out else describe_status(self.status)
        lines = (self.stderr or self.stdout).strip().splitlines()[-max_lines:]
        detail = "\n".join(lines) if lines else "(no output)"
        return f"`{' '.join(self.argv)}` {how}:\n{detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "ms": self.ms,
            "status": self.status,
            "maxrss_kb": self.maxrss_kb,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "timed_out": self.timed_out,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        return cls(
            argv=tuple(data["argv"]),
            ms=float(data["ms"]),
            status=int(data["status"]),
            maxrss_kb=int(data["maxrss_kb"]),
            stdout=str(data["stdout"]),
            stderr=str(data["stderr"]),
            timed_out=bool(data["timed_out"]),
        )


def describe_status(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


class Spawner:
    """Runs commands one at a time and times them (see the module docstring)."""

    def __init__(self, scratch_dir: str, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        self._out = os.open(os.path.join(scratch_dir, "stdout"), os.O_RDWR | os.O_CREAT, 0o600)
        self._err = os.open(os.path.join(scratch_dir, "stderr"), os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        for fd in (self._devnull, self._out, self._err):
            with contextlib.suppress(OSError):
                os.close(fd)

    def run(self, argv: Sequence[str], timeout: float) -> Call:
        """Run ``argv`` (argv[0] an absolute path) to completion; never raises on failure.

        A KeyboardInterrupt while the command runs is held back until the command has
        finished, so an interrupted benchmark never abandons a half-made container.
        """
        for fd in (self._out, self._err):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        actions = [
            (os.POSIX_SPAWN_DUP2, self._devnull, 0),
            (os.POSIX_SPAWN_DUP2, self._out, 1),
            (os.POSIX_SPAWN_DUP2, self._err, 2),
        ]
        start = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], list(argv), self.env, file_actions=actions, setpgroup=0)
        pidfd = os.pidfd_open(pid)
        interrupted: BaseException | None = None
        timed_out = False
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            deadline = time.monotonic() + timeout
            while True:
                remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
                try:
                    ready = poller.poll(remaining_ms)
                except KeyboardInterrupt as exc:
                    interrupted = exc
                    continue
                break
            end = time.perf_counter_ns()
            if not ready:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            _, wstatus, usage = os.wait4(pid, 0)
        finally:
            os.close(pidfd)
        call = Call(
            argv=tuple(argv),
            ms=(end - start) / 1e6,
            status=os.waitstatus_to_exitcode(wstatus),
            maxrss_kb=usage.ru_maxrss,
            stdout=os.pread(self._out, 1 << 20, 0).decode(errors="replace"),
            stderr=os.pread(self._err, 1 << 20, 0).decode(errors="replace"),
            timed_out=timed_out,
        )
        if interrupted is not None:
            raise interrupted
        return call


def peak_rss_argv(argv: Sequence[str], out_path: str) -> list[str] | None:
    """``argv`` wrapped in GNU time writing the peak RSS (KiB) to ``out_path``; None if absent."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    return [GNU_TIME, "-f", "%M", "-o", out_path, *argv]


def read_peak_rss(out_path: str) -> int | None:
    """The KiB GNU time wrote (its last line; a failed command adds a line before it)."""
    try:
        with open(out_path) as f:
            lines = f.read().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


def which(name: str) -> str | None:
    return shutil.which(name)


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p90(values: Sequence[float]) -> float:
    """90th percentile, linear interpolation between closest ranks (inclusive method)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


# --------------------------------------------------------------------------- /proc readers


def meminfo_kb() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0])
    return out


def host_used_kb(samples: int = 1, interval: float = 0.1) -> int:
    """MemTotal - MemAvailable: what the host cannot hand out (kernel included); the median
    of ``samples`` readings ``interval`` seconds apart, to damp other processes' spikes."""
    readings = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        info = meminfo_kb()
        readings.append(info["MemTotal"] - info["MemAvailable"])
    return int(statistics.median(readings))


def meminfo_sum_kb(keys: Sequence[str], samples: int = 1, interval: float = 0.1) -> int:
    """The sum of /proc/meminfo's ``keys`` (a key the kernel lacks counts 0): the median of
    ``samples`` readings ``interval`` seconds apart."""
    readings = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        info = meminfo_kb()
        readings.append(sum(info.get(k, 0) for k in keys))
    return int(statistics.median(readings))


KERNEL_KEYS = ("Slab", "KernelStack", "PageTables")
KERNEL_UNAVAILABLE_KEYS = ("SUnreclaim", "KernelStack", "PageTables", "VmallocUsed", "Percpu")


def kernel_kb(samples: int = 1, interval: float = 0.1) -> int:
    """The kernel's own memory that containers cost: Slab + KernelStack + PageTables (the
    median of ``samples`` readings). Page cache and other processes' pages are not in it, so
    it moves far less than MemAvailable while other work runs."""
    return meminfo_sum_kb(KERNEL_KEYS, samples, interval)


def kernel_unavailable_kb(samples: int = 1, interval: float = 0.1) -> int:
    """The part of the kernel's own memory that MemAvailable does not count as available:
    SUnreclaim + KernelStack + PageTables + VmallocUsed + Percpu (the median of ``samples``
    readings). Reclaimable slab (dentries, inodes) is in MemAvailable already, so subtracting
    all of Slab from a MemAvailable delta would take it off twice."""
    return meminfo_sum_kb(KERNEL_UNAVAILABLE_KEYS, samples, interval)


def pss_kb(pid: int) -> int | None:
    """Proportional set size of a process (shared pages divided among their users)."""
    return _proc_field(f"/proc/{pid}/smaps_rollup", "Pss")


def status_kb(pid: int, field: str) -> int | None:
    """A kB field of /proc/<pid>/status, such as VmHWM (peak RSS) or VmRSS."""
    return _proc_field(f"/proc/{pid}/status", field)


def _proc_field(path: str, field: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == field:
                    return int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str  # R, S, D, Z, ...


def process_table() -> dict[int, Proc]:
    """Every process on the host; ones that vanish while being read are skipped."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = text[text.rindex(")") + 2 :].split()
        table[int(name)] = Proc(int(name), int(fields[1]), fields[0])
    return table


def descendants(roots: Iterable[int], table: Mapping[int, Proc]) -> set[int]:
    """``roots`` (those still alive) and all their descendants."""
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def ancestors(pid: int, table: Mapping[int, Proc]) -> list[int]:
    """Parent, grandparent, ... up to (not including) pid 1."""
    out = []
    seen = {pid}
    while pid in table and table[pid].ppid > 1 and table[pid].ppid not in seen:
        pid = table[pid].ppid
        seen.add(pid)
        out.append(pid)
    return out


def environ_has(pid: int, entry: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry.encode() in f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def cgroup_dirs(prefix: str, root: str = "/sys/fs/cgroup") -> list[str]:
    """Directories named ``prefix*`` anywhere in the cgroup hierarchies (not below them)."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        for name in list(dirnames):
            if name.startswith(prefix):
                found.append(os.path.join(dirpath, name))
                dirnames.remove(name)
    return found


def remove_cgroup_dirs(paths: Iterable[str]) -> None:
    """rmdir cgroups, children first; ones still busy stay (the caller checks again)."""
    for path in paths:
        for dirpath, _, _ in sorted(os.walk(path), key=lambda w: len(w[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def marked_processes(cgroup_part: str, marker: str, exclude: set[int]) -> list[int]:
    """Live processes whose cgroup path contains ``cgroup_part`` (container processes) or
    whose environment holds ``marker`` (anything a runtime CLI of ours left running)."""
    found = []
    for pid, proc in process_table().items():
        if pid in exclude or proc.state == "Z":
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                in_cgroup = cgroup_part in f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if in_cgroup or environ_has(pid, marker):
            found.append(pid)
    return found


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path.rstrip("/") + "/")]


def wait_exited(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is a zombie or gone (it is not our child, so no wait())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return True
        if text[text.rindex(")") + 2] in "ZX":
            return True
        time.sleep(0.001)
    return False


# --------------------------------------------------------------------------- tables


def sweep_run(prefix: str, tmp: Path, marker_var: str) -> list[str]:
    """What a benchmark run left behind (cgroups named with ``prefix``, processes carrying
    ``marker_var=prefix``, mounts under ``tmp``): found, force-cleaned (SIGKILL, cgroups
    removed, lazy unmounts), then what is still there; ``tmp`` removed unless mounts remain.
    The report lines (empty: nothing was left)."""

    def found() -> list[str]:
        processes = marked_processes(prefix, f"{marker_var}={prefix}", {os.getpid()})
        items = [f"cgroup {p}" for p in cgroup_dirs(prefix)]
        items += [f"process {p}" for p in processes]
        return items + [f"mount {p}" for p in mounts_under(str(tmp))]

    left = found()
    if left:
        for pid in marked_processes(prefix, f"{marker_var}={prefix}", {os.getpid()}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        for point in sorted(mounts_under(str(tmp)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        remove_cgroup_dirs(cgroup_dirs(prefix))
        left += [f"STILL THERE: {item}" for item in found()]
    if mounts_under(str(tmp)):
        left.append(f"temp dir {tmp} kept: mounts remain below it")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return left


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Aligned plain-text table: the first ``left`` columns left-aligned, the rest right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    align = ["---" if i < left else "---:" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    left: int = 1  # how many leading columns are labels (left-aligned)


def render(
    heading: str,
    info: Sequence[str],
    tables: Sequence[Table],
    sections: Sequence[tuple[str, Sequence[str]]],
    markdown: bool,
) -> str:
    """A whole report: a heading, info lines, tables, then titled lists (errors, notes...).

    Plain text for the terminal, or a markdown section (``##`` heading) for docs/.
    """
    if markdown:
        out = [f"## {heading}", "", *(f"- {line}" for line in info), ""]
        for t in tables:
            out += [f"### {t.title}", "", markdown_table(t.headers, t.rows, t.left), ""]
        for title, items in sections:
            if items:
                out += [f"### {title}", "", *(_md_item(i) for i in items), ""]
    else:
        out = [heading, "=" * len(heading), *info, ""]
        for t in tables:
            out += [t.title, format_table(t.headers, t.rows, t.left), ""]
        for title, items in sections:
            if items:
                out += [title, *(f"- {i}" for i in items), ""]
    return "\n".join(out)


def _md_item(text: str) -> str:
    return f"- {text}" if "\n" not in text else "```\n" + text + "\n```"


def write_markdown_section(path: str, key: str, body: str) -> None:
    """Write ``body`` into ``path`` between markers named ``key``: replaced if present,
    appended otherwise, so one docs file can hold the sections of several benchmarks."""
    begin, end = MARKER_BEGIN.format(key=key), MARKER_END.format(key=key)
    section = f"{begin}\n{body.rstrip()}\n{end}\n"
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        tail = tail.lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


B = TypeVar("B", bound="Benchmark")


class Benchmark(Protocol):
    """What ``run_benchmark`` drives: set up, run every case, clean up, report leftovers."""

    left: list[str]

    def setup(self) -> None: ...
    def run_all(self) -> None: ...
    def cleanup(self) -> None: ...


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_benchmark(
    bench: B,
    report: Callable[[B, bool], str],
    markdown_file: str | None,
    markdown_key: str,
) -> int:
    """Run a benchmark to the end or to Ctrl-C/SIGTERM, always cleaning up; print its report
    and write its markdown section. Exit status: 0, 1 if anything was left behind, 130 when
    interrupted."""
    signal.signal(signal.SIGTERM, _interrupt)
    interrupted = False
    try:
        bench.setup()
        bench.run_all()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        print(".. cleaning up", file=sys.stderr, flush=True)
        bench.cleanup()
    if interrupted:
        print("interrupted; cleaned up: " + ("; ".join(bench.left) or "nothing left"))
        return 130
    print(report(bench, False))
    if markdown_file:
        write_markdown_section(markdown_file, markdown_key, report(bench, True))
    return 1 if bench.left else 0
