"""OCI lifecycle hooks: run each hook with the container's state on stdin.

Rules (runtime spec, config.md "POSIX-platform Hooks"): hooks of one kind run in order; a hook
gets ``path`` as the program, ``args`` as argv and ``env``; its ``timeout`` kills it. A failing
prestart/createRuntime/createContainer/startContainer hook fails the operation (the caller
then tears the container down); poststart and poststop failures are logged as warnings and the
lifecycle goes on. subprocess is imported only when a hook actually runs.
"""

from __future__ import annotations

from berth.errors import BerthError
from berth.runtime import log
from berth.spec import jsonio
from berth.spec.config import Hook, Hooks
from berth.spec.state import State

WARN_ONLY = frozenset({"poststart", "poststop"})


def run_hook(hook: Hook, state: State, kind: str, index: int) -> None:
    import subprocess

    argv = list(hook.args) or [hook.path]
    try:
        result = subprocess.run(
            argv,
            executable=hook.path,
            input=jsonio.dumps(state.to_json()).encode(),
            env=dict(e.split("=", 1) for e in hook.env),
            capture_output=True,
            timeout=hook.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BerthError(
            f"hooks.{kind}[{index}]: {hook.path} timed out after {hook.timeout}s"
        ) from None
    except OSError as exc:
        raise BerthError(f"hooks.{kind}[{index}]: {hook.path}: {exc.strerror}") from None
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise BerthError(
            f"hooks.{kind}[{index}]: {hook.path} exited with status {result.returncode}"
            + (f": {detail[-1]}" if detail else "")
        )


def run_hooks(hooks: Hooks, kind: str, state: State) -> None:
    for index, hook in enumerate(hooks[kind]):
        try:
            run_hook(hook, state, kind, index)
        except BerthError as exc:
            if kind not in WARN_ONLY:
                raise
            log.warning(str(exc))
