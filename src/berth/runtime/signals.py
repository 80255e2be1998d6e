"""Signal numbers and names for Linux, and handler installation, without ``import signal``.

``signal`` builds its enums at import (~6 ms per runtime invocation); the interpreter has already
loaded the C module ``_signal`` behind it, which is all the runtime needs. Rules: numbers are
the Linux generic ABI (x86, arm, arm64, riscv); names are accepted with or without ``SIG``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


SIGHUP = 1
SIGINT = 2
SIGQUIT = 3
SIGKILL = 9
SIGPIPE = 13
SIGUSR1 = 10
SIGUSR2 = 12
SIGTERM = 15
SIGCHLD = 17
SIGCONT = 18
SIGSTOP = 19
SIGWINCH = 28
SIGXFSZ = 25

NUMBERS = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6,
    "SIGIOT": 6, "SIGBUS": 7, "SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11,
    "SIGUSR2": 12, "SIGPIPE": 13, "SIGALRM": 14, "SIGTERM": 15, "SIGSTKFLT": 16,
    "SIGCHLD": 17, "SIGCONT": 18, "SIGSTOP": 19, "SIGTSTP": 20, "SIGTTIN": 21, "SIGTTOU": 22,
    "SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26, "SIGPROF": 27,
    "SIGWINCH": 28, "SIGIO": 29, "SIGPOLL": 29, "SIGPWR": 30, "SIGSYS": 31,
}  # fmt: skip
SIGRTMIN = 34
SIGRTMAX = 64

_signal: Any = sys.modules.get("_signal") or __import__("_signal")
SIG_DFL: Any = _signal.SIG_DFL


def parse(text: str) -> int | None:
    """A signal number from ``9``, ``KILL``, ``SIGKILL`` or ``RTMIN+3``; None if invalid."""
    if text.isascii() and text.isdigit():
        number = int(text)
        return number if 0 < number <= SIGRTMAX else None
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name in NUMBERS:
        return NUMBERS[name]
    for base, number in (("SIGRTMIN", SIGRTMIN), ("SIGRTMAX", SIGRTMAX)):
        if name == base:
            return number
        offset_text = name[len(base) + 1 :]
        if (
            name.startswith(base)
            and name[len(base)] in "+-"
            and offset_text.isascii()
            and offset_text.isdigit()
        ):
            offset = int(name[len(base) :])
            result = number + offset
            return result if SIGRTMIN <= result <= SIGRTMAX else None
    return None


# what the Python interpreter ignores at start-up; an ignored signal stays ignored across
# execve, so a container's program would inherit it
PYTHON_IGNORES = (SIGPIPE, SIGXFSZ)


def set_handler(signum: int, handler: Callable[[int, object], None] | Any) -> None:
    _signal.signal(signum, handler)
