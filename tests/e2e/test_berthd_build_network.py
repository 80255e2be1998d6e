"""The network of ``docker build``'s RUN steps against berthd (``--network``): the default
bridge (a routed network: a container reached by its address, berthd's own namespace through
the gateway), ``none`` (loopback only), ``host`` (berthd's namespace) and a user network (its
containers by name, through the embedded DNS); bad modes refused before the build starts; and
no veth, netns pin or address left after each build.

berthd runs in a network namespace of its own (``berthd_process``): the servers the steps
reach are a container, or a ``busybox nc`` the test starts in that namespace (``nsenter``).
Outbound NAT to the internet is not tested (no internet here).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from berthd_process import launch, mounts_under
from test_berthd_build import _cli_env, _sleepers
from test_berthd_images import DOCKER, Daemon, stop_daemon, stop_supervisor
from test_berthd_networks import _berthd_pid, _inspect, _pins, _veths

from berth.image import base
from leakcheck import tagged_name

pytestmark = [pytest.mark.root, pytest.mark.peer]

SERVER = ["busybox", "nc", "-ll", "-p", "7070", "-e", "echo", "hello-from-{}"]


def _build(
    d: Daemon, tmp_path: Path, dockerfile: str, *args: str
) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return d.docker("build", "--no-cache", *args, str(ctx), check=False)


def _run_step(command: str) -> str:
    return f"FROM busybox\nRUN {command}\n"


def _netns_state(d: Daemon) -> tuple[set[str], list[str]]:
    return _veths(d), _pins(d)


@pytest.fixture(scope="module")
def server(berthd: Daemon) -> Iterator[str]:
    """A container on the default bridge answering TCP 7070; its address."""
    argv = [a.format("bridge") for a in SERVER]
    berthd.docker("run", "-d", "--name", "bsrv", *argv)
    try:
        yield str(_inspect(berthd, "container", "bsrv")["NetworkSettings"]["IPAddress"])
    finally:
        berthd.docker("rm", "-f", "bsrv")


@pytest.fixture
def in_berthd_netns(berthd: Daemon) -> Iterator[None]:
    """``busybox nc`` answering TCP 7071 in berthd's own network namespace."""
    proc = subprocess.Popen(
        ["nsenter", f"--net=/proc/{_berthd_pid(berthd)}/ns/net", base.BUSYBOX,
         "nc", "-ll", "-p", "7071", "-e", "echo", "hello-from-berthd"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        net = f"/proc/{_berthd_pid(berthd)}/net/"
        while ":1B9F " not in Path(net + "tcp").read_text() + Path(net + "tcp6").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "nc did not listen"
            time.sleep(0.02)
        yield
    finally:
        proc.kill()
        proc.wait()


def test_a_step_on_the_default_bridge_reaches_a_container_and_none_cannot(
    berthd: Daemon, server: str, tmp_path: Path
) -> None:
    before = _netns_state(berthd)
    probe = (
        f"nc -w 3 {server} 7070 </dev/null; ip -o -4 addr; ip route;"
        " cat /etc/hostname /etc/hosts /etc/resolv.conf"
    )
    out = _build(berthd, tmp_path, _run_step(probe))
    assert out.returncode == 0, out.stderr
    assert "hello-from-bridge" in out.stdout
    step = re.search(r"Running in ([0-9a-f]{12})", out.stdout)
    assert step is not None
    address = re.search(r"inet (172\.17\.0\.\d+)/16", out.stdout)
    assert address is not None and address.group(1) != server
    assert "default via 172.17.0.1 dev eth0" in out.stdout
    assert f"{address.group(1)}\t{step.group(1)}" in out.stdout  # /etc/hosts
    assert "127.0.0.1\tlocalhost" in out.stdout
    nameservers = re.findall(r"^nameserver (\S+)$", out.stdout, re.M)
    assert nameservers and not [s for s in nameservers if s.startswith("127.")]
    assert _netns_state(berthd) == before

    for mode in ("none",):
        cut = _build(berthd, tmp_path, _run_step(
            f"if nc -w 2 {server} 7070 </dev/null; then echo reached; else echo unreachable; fi;"
            " ip -o link"
        ), "--network", mode)  # fmt: skip
        assert cut.returncode == 0, cut.stderr
        assert "unreachable" in cut.stdout and "hello-from" not in cut.stdout
        assert "lo:" in cut.stdout and "eth0" not in cut.stdout
        assert _netns_state(berthd) == before


def test_a_step_reaches_berthd_through_the_gateway_and_on_host(
    berthd: Daemon, in_berthd_netns: None, tmp_path: Path
) -> None:
    before = _netns_state(berthd)
    via_gateway = _build(berthd, tmp_path, _run_step("nc -w 3 172.17.0.1 7071 </dev/null"))
    assert via_gateway.returncode == 0, via_gateway.stderr
    assert "hello-from-berthd" in via_gateway.stdout
    host = _build(berthd, tmp_path, _run_step(
        "nc -w 3 127.0.0.1 7071 </dev/null; ip -o link; cat /etc/resolv.conf"
    ), "--network", "host")  # fmt: skip
    assert host.returncode == 0, host.stderr
    assert "hello-from-berthd" in host.stdout and "berth0" in host.stdout  # berthd's links
    assert _netns_state(berthd) == before


def test_a_step_on_a_user_network_resolves_a_container_by_name(
    berthd: Daemon, tmp_path: Path
) -> None:
    berthd.docker("network", "create", "--subnet", "10.78.0.0/24", "bnet")
    try:
        before = _netns_state(berthd)
        berthd.docker("run", "-d", "--name", "named", "--network", "bnet",
                      *[a.format("named") for a in SERVER])  # fmt: skip
        out = _build(berthd, tmp_path, _run_step(
            "nc -w 3 named 7070 </dev/null; cat /etc/resolv.conf; ip -o -4 addr"
        ), "--network", "bnet")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "hello-from-named" in out.stdout
        assert "nameserver 127.0.0.11" in out.stdout and "inet 10.78.0." in out.stdout
        members = _inspect(berthd, "network", "bnet")["Containers"]
        assert [m["Name"] for m in members.values()] == ["named"]  # the step's endpoint gone
        step_ip = re.findall(r"inet (10\.78\.0\.\d+)/24", out.stdout)
        after = berthd.docker("run", "--rm", "--network", "bnet", "busybox", "ip", "-o", "-4",
                              "addr", "show", "eth0")  # fmt: skip
        assert step_ip and f"inet {step_ip[0]}/24" in after.stdout  # its address is free again
        berthd.docker("rm", "-f", "named")
        assert _netns_state(berthd) == before
    finally:
        berthd.docker("rm", "-f", "named", check=False)
        berthd.docker("network", "rm", "bnet")


def test_bad_network_modes_are_refused_before_the_build(berthd: Daemon, tmp_path: Path) -> None:
    before = _netns_state(berthd)
    unknown = _build(berthd, tmp_path, _run_step("true"), "--network", "nosuch")
    assert unknown.returncode == 1 and "network nosuch not found" in unknown.stderr
    assert "Step 1/2" not in unknown.stdout
    joined = _build(berthd, tmp_path, _run_step("true"), "--network", "container:abc")
    assert joined.returncode == 1 and "networkmode='container:abc'" in joined.stderr
    assert _netns_state(berthd) == before


def test_the_step_layer_has_none_of_the_network_files(berthd: Daemon, tmp_path: Path) -> None:
    """/etc/hostname, hosts and resolv.conf are mounted on the step, not part of its layer."""
    out = _build(berthd, tmp_path, _run_step("echo x > /made; cat /etc/hosts"), "-t", "bnetlayer")
    assert out.returncode == 0, out.stderr
    try:
        berthd.docker("save", "-o", str(tmp_path / "saved.tar"), "bnetlayer")
    finally:
        berthd.docker("rmi", "bnetlayer")
    with tarfile.open(tmp_path / "saved.tar") as saved:
        manifest = json.load(saved.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = saved.extractfile(manifest[0]["Layers"][-1])
        assert layer is not None
        with tarfile.open(fileobj=layer) as diff:
            names = [m.name.strip("./") for m in diff.getmembers()]
    assert names == ["made"], names


def test_a_failed_or_cancelled_step_leaves_no_veth_or_pin(berthd: Daemon, tmp_path: Path) -> None:
    before = _netns_state(berthd)
    failed = _build(berthd, tmp_path, _run_step("ip -o -4 addr; exit 3"))
    assert failed.returncode == 3 and "inet 172.17.0." in failed.stdout
    assert _netns_state(berthd) == before
    seconds = random.randint(100000, 999999)
    (tmp_path / "ctx" / "Dockerfile").write_text(_run_step(f"sleep {seconds}"))
    cli = subprocess.Popen(
        [DOCKER, "-H", berthd.url, "build", str(tmp_path / "ctx")], env=_cli_env(berthd),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _sleepers(seconds):
            assert time.monotonic() < deadline, "the step did not start"
            time.sleep(0.05)
        assert _netns_state(berthd) != before  # the step's veth and pin
    finally:
        cli.kill()
        cli.wait()
    deadline = time.monotonic() + 15
    while _sleepers(seconds) or _netns_state(berthd) != before:
        assert time.monotonic() < deadline, _netns_state(berthd)
        time.sleep(0.05)


def test_a_daemon_killed_mid_step_leaves_no_veth_or_pin_after_its_restart(
    tmp_path: Path,
) -> None:
    """kill -9 berthd while a step runs on the default bridge: the next daemon's start removes
    the step's pin and veth (the networks' sweep), its first build the step itself."""
    home = Path(tempfile.mkdtemp(prefix="berthd-bnet-"))
    daemon = Daemon(home, str(home / "berth.sock"), home / "root", launch(home, tagged_name()))
    try:
        daemon.docker("pull", "busybox")
        seconds = random.randint(100000, 999999)
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(_run_step(f"sleep {seconds}"))
        cli = subprocess.Popen(
            [DOCKER, "-H", daemon.url, "build", str(ctx)], env=_cli_env(daemon),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not _sleepers(seconds):
            assert time.monotonic() < deadline, "the step did not start"
            time.sleep(0.05)
        assert _veths(daemon) and _pins(daemon)
        daemon.proc.kill()
        daemon.proc.wait()
        cli.wait(timeout=30)
        daemon.proc = launch(home, tagged_name())
        assert not _veths(daemon) and not _pins(daemon)
        (ctx / "Dockerfile").write_text(_run_step("true"))
        daemon.docker("build", str(ctx))
        assert not _sleepers(seconds)
        assert not _veths(daemon) and not _pins(daemon)
    finally:
        stop_daemon(daemon)
        stop_supervisor(daemon.data_root)
        leaked = mounts_under(str(daemon.data_root))
        shutil.rmtree(home, ignore_errors=not leaked)
    assert not leaked, f"mounts left: {leaked}"
