"""A private supervisor for the engine's kernel tests (``Sup``), used through the ``sup``
fixture of this directory's conftest: started detached on temp paths as berthd starts it; its
teardown force-deletes every container it knows, stops it and waits until it is gone, so the
leak check then sees no process, cgroup or mount left."""

from __future__ import annotations

import os
import time
from pathlib import Path

from berth.engine import supervisor_client as sc
from berth.runtime import container, store


class Sup:
    """One supervisor under test: its paths, its start, its clients."""

    def __init__(self, workdir: Path) -> None:
        self.root = str(workdir / "root")
        self.socket = str(workdir / "sup.sock")
        self.log = str(workdir / "supervisor.log")
        self.clients: list[sc.Client] = []

    def start(self) -> None:
        assert sc.ensure_started(self.root, self.socket, self.log)

    def client(self) -> sc.Client:
        c = sc.Client(self.socket, timeout=30)
        self.clients.append(c)
        return c

    def pid(self) -> int:
        return int(Path(self.root, "supervisor.lock").read_text())

    def log_text(self) -> str:
        return Path(self.log).read_text() if os.path.exists(self.log) else ""

    def teardown(self) -> None:
        for c in self.clients:
            c.close()
        if sc.answers(self.socket):
            with sc.Client(self.socket, timeout=30) as c:
                for info in c.list():
                    c.delete(info.id, force=True)
                pid = self.pid()
                c.shutdown()
            wait_gone(pid)
        st = store.Store(self.root)  # whatever a failed test left: the runtime removes it
        for cid in st.ids():
            container.delete(st, cid, force=True)


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while store.process_start_time(pid) is not None:
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.01)
