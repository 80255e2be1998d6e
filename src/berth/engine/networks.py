"""berthd's networks: bridge networks with IPAM, and each container's namespace and endpoints.

Rules:
- Records (``network_store``) under ``<data_root>/networks``; the three predefined networks
  exist from the first start. A user network's bridge is made when the network is (and at
  daemon start when missing); the default bridge (``berth0``) when the first container needs
  it (and at daemon start if it exists or a running container uses it), so a daemon that runs
  no container touches no interface. A bridge is deleted when its network is removed; nothing
  else removes it (a daemon stop leaves networking as it is, as dockerd's live-restore does).
- A container's networking (``network_sandbox``) is planned at create (mode and endpoints
  validated, unknown networks refused, the three /etc files written) and made at each start
  (``attach``): a namespace pinned at ``<run>/netns/<id>`` (the spec joins that path, fixed at
  create), lo up, one veth pair per network (``veth<7 hex>`` on the bridge, ``eth<n>`` inside
  with Docker's MAC and the address IPAM gives, default route via the first network's
  gateway unless it is internal), the hooks' ``sandbox_ready``, then the /etc files and
  ``network.json`` (one thread trip). A "none" container's namespace is the runtime's
  (``Sandbox.runtime_netns``: no pin, no netlink work); one that joins it (``container:<id>``:
  its spec names the target's pin) pins it then from the target's init (``/proc/<pid>/ns/net``,
  also its ``SandboxKey``) until the target's release. ``release`` undoes it all (hooks'
  ``sandbox_gone`` first) at the container's exit, after a failed start and at removal; it is
  idempotent. A failure in ``attach`` releases what it made before it raises.
- A released veth is deleted in the background (``_retire``: the kernel's delete waits out RCU
  grace periods, 15-40 ms, which an exit should not pay); its address stays taken until the
  link is gone. A failed start, an explicit removal (``rm``), a network's removal, a static
  ``--ip`` of that address and the daemon's stop wait for it (``retired``).
- Addresses in use are those of active endpoints (memory, rebuilt at daemon start from the
  containers' ``network.json``); a static ``--ip`` must be inside the subnet and free.
- Hooks (``network_hooks``) are called in the order that module states, under ``self.lock``,
  which orders every change of networks and endpoints. Blocking netlink work runs in a thread.
- Daemon start (``open`` then ``reconcile`` once the containers are known): bridges made
  again, hooks told of every network and of running containers' sandboxes, the networking of
  containers no longer running released, pins and veths on our bridges nobody owns removed.
- A build's RUN step gets a sandbox too (``attach_build``/``release_build``: ``network_build``),
  one of ``sandboxes`` keyed by the step's id, with no container record.
- Forwarding (``net.ipv4.ip_forward``) is enabled in berthd's namespace when a masquerading
  network exists, unless ``ip_forward`` is False.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
from collections.abc import Iterable
from typing import Any, Protocol

from berth.engine import netns, network_build, network_connect
from berth.engine import network_files as files
from berth.engine import network_links as links
from berth.engine import network_store as ipam
from berth.engine.api_errors import Forbidden
from berth.engine.containers_state import Record, now_rfc3339
from berth.engine.events import EventBus
from berth.engine.network_build import StepSandbox
from berth.engine.network_hooks import EndpointView, NetworkHooks, NetworkView, SandboxView
from berth.engine.network_sandbox import Endpoint, Sandbox, empty_network_settings
from berth.engine.network_store import Network, NetworkStore
from berth.engine.paths import Paths
from berth.engine.port_publisher import PortPublisher
from berth.engine.ports import publication
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound

log = logging.getLogger(__name__)

_VETH = re.compile(r"^veth[0-9a-f]{7}$")


class ContainerLookup(Protocol):
    records: dict[str, Record]

    def get(self, ref: str) -> Record: ...

    def lock_of(self, cid: str) -> asyncio.Lock: ...

    def init_start(self, cid: str) -> int | None: ...  # its running init's start (blocking)


class NetworkManager:
    def __init__(
        self,
        paths: Paths,
        events: EventBus | None = None,
        host_netns: str | None = None,
        ip_forward: bool = True,
    ) -> None:
        self.paths = paths
        self.events = events if events is not None else EventBus()
        self.host_netns = host_netns  # None: berthd's own (tests pass a pinned one)
        self.ip_forward = ip_forward
        self.store = NetworkStore(os.path.join(paths.data_root, "networks"))
        self.networks: dict[str, Network] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.taken: dict[str, set[str]] = {}
        # veth name -> (container id, network id, address, the task deleting it): _retire.
        self.retiring: dict[str, tuple[str, str, str, asyncio.Task[None]]] = {}
        self.hooks: list[NetworkHooks] = []
        # The published ports' hook (network_services), for what inspect and ps show.
        self.ports: PortPublisher | None = None
        self.up: set[str] = set()  # networks whose bridge is up and hooks told
        self.lock = asyncio.Lock()
        self.containers: ContainerLookup | None = None

    # ----------------------------------------------------------------- paths and lookups
    @property
    def netns_dir(self) -> str:
        return os.path.join(self.paths.run_dir, "netns")

    def pin(self, cid: str) -> str:
        return os.path.join(self.netns_dir, cid)

    def get(self, ref: str) -> Network:
        """By id, name, or unique id prefix; dockerd's 404 otherwise."""
        found = self.networks.get(ref)
        if found is not None:
            return found
        for net in self.networks.values():
            if net.name == ref:
                return net
        if ref:
            matches = [n for n in self.networks.values() if n.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches found)")
        raise NotFound(f"network {ref} not found")

    def _record(self, cid: str) -> Record | None:
        return self.containers.records.get(cid) if self.containers is not None else None

    def _running(self, cid: str) -> bool:
        rec = self._record(cid)
        return rec is not None and rec.running

    def view(self, net: Network) -> NetworkView:
        return NetworkView(
            id=net.id,
            name=net.name,
            bridge=net.bridge,
            subnet=net.subnet,
            gateway=net.gateway,
            internal=net.internal,
            masquerade=net.masquerade,
            user_defined=net.user_defined,
        )

    def sandbox_view(self, sandbox: Sandbox) -> SandboxView:
        rec = self._record(sandbox.container_id)
        endpoints = []
        for ep in sandbox.endpoints:
            net = self.networks.get(ep.network_id)
            if net is None or not ep.ip:
                continue
            endpoints.append(
                EndpointView(self.view(net), ep.ip, ep.prefix_len, ep.mac, tuple(ep.aliases))
            )
        return SandboxView(
            container_id=sandbox.container_id,
            container_name=rec.name.lstrip("/") if rec else "",
            netns_path=self.pin(sandbox.container_id) if sandbox.pinned else "",
            endpoints=tuple(endpoints),
            config=dict(rec.config) if rec else {},
            host_config=dict(rec.host_config) if rec else {},
        )

    def _emit(self, action: str, net: Network, **attributes: str) -> None:
        self.events.emit("network", action, net.id, {"name": net.name, "type": net.driver,
                                                      **attributes})  # fmt: skip

    # ----------------------------------------------------------------- daemon start
    async def open(self) -> None:
        os.makedirs(self.netns_dir, mode=0o700, exist_ok=True)
        for net in await asyncio.to_thread(self.store.load):
            self.networks[net.id] = net
        names = {n.name for n in self.networks.values()}
        for name in ipam.PREDEFINED:
            if name not in names:
                await self._add_predefined(name)
        for cid in sorted(os.listdir(self.paths.containers)):
            sandbox = Sandbox.load(self.paths.container(cid))
            if sandbox is not None:
                self.sandboxes[cid] = sandbox
                for ep in sandbox.endpoints:
                    if sandbox.active and ep.ip:
                        self.taken.setdefault(ep.network_id, set()).add(ep.ip)
        existing = set(await asyncio.to_thread(links.link_names, self.host_netns))
        used = {ep.network_id for s in self.sandboxes.values() if s.active for ep in s.endpoints}
        async with self.lock:
            for net in list(self.networks.values()):
                if net.is_bridge and (net.user_defined or net.bridge in existing or net.id in used):
                    try:
                        await self._bring_up(net)
                    except BerthError as e:
                        log.error("network %s: cannot make its bridge: %s", net.name, e.message)

    async def _add_predefined(self, name: str) -> None:
        net = Network(ipam.new_id(), name, ipam.DRIVER_OF_PREDEFINED[name], now_rfc3339())
        if name == "bridge":
            routes = await asyncio.to_thread(links.route_destinations, self.host_netns)
            net.subnet = ipam.pick_subnet(self.networks.values(), routes)
            net.gateway = ipam.first_host(net.subnet)
        await asyncio.to_thread(self.store.save, net)
        self.networks[net.id] = net

    async def _bring_up(self, net: Network) -> None:
        """The bridge (made if missing), forwarding, then the hooks' ``network_added``."""
        await asyncio.to_thread(
            links.ensure_bridge, self.host_netns, net.bridge, net.gateway, net.prefix_len
        )
        if self.ip_forward and net.masquerade and not net.internal:
            await asyncio.to_thread(links.enable_forwarding, self.host_netns)
        done: list[NetworkHooks] = []
        try:
            for hook in self.hooks:
                await hook.network_added(self.view(net))
                done.append(hook)
        except BaseException:
            for hook in reversed(done):
                await hook.network_removed(self.view(net))
            raise
        self.up.add(net.id)

    async def reconcile(self) -> None:
        """After the containers are loaded: release what no running container owns, remove
        pins and veths nobody owns, tell the hooks of the running sandboxes."""
        async with self.lock:
            for cid, sandbox in list(self.sandboxes.items()):
                if self._record(cid) is None:
                    del self.sandboxes[cid]
                    continue
                if not self._running(cid):
                    if sandbox.active or any(ep.host_if for ep in sandbox.endpoints):
                        log.info("container %s: releasing the networking of a stopped one", cid)
                        await self._release_locked(sandbox)
                elif sandbox.active and sandbox.own_netns:
                    view = self.sandbox_view(sandbox)
                    for hook in self.hooks:
                        try:
                            await hook.sandbox_ready(view)
                        except BerthError as e:
                            log.error("container %s: hook at restart: %s", cid, e.message)
            await asyncio.to_thread(self._sweep)
            await self.retired()

    def _sweep(self) -> None:
        owned = {cid for cid, s in self.sandboxes.items() if s.own_netns and self._running(cid)}
        for entry in os.listdir(self.netns_dir):
            if entry not in owned:
                log.info("netns pin %s: no running container owns it: removed", entry)
                netns.remove(os.path.join(self.netns_dir, entry))
        veths = {ep.host_if for s in self.sandboxes.values() if s.active for ep in s.endpoints}
        bridges = {n.bridge for n in self.networks.values() if n.is_bridge}
        for name, master in links.veths_on(self.host_netns, bridges):
            if _VETH.match(name) and name not in veths:
                log.info("veth %s on %s: no endpoint owns it: removed", name, master)
                links.remove_link(self.host_netns, name)

    # ----------------------------------------------------------------- network CRUD
    async def create(self, body: dict[str, Any]) -> Network:
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("network name must not be empty")
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            if driver in ("host", "null"):
                raise Forbidden(f'only one instance of "{driver}" network is allowed')
            raise NotFound(f'plugin "{driver}" not found')
        if body.get("EnableIPv6"):
            raise InvalidArgument("IPv6 networks are not supported by Berth (EnableIPv6)")
        if (
            body.get("Ingress")
            or body.get("ConfigOnly")
            or (body.get("ConfigFrom") or {}).get("Network")
        ):
            raise InvalidArgument("Ingress, ConfigOnly and ConfigFrom networks are not supported")
        ipam_body = body.get("IPAM") or {}
        if (ipam_body.get("Driver") or "default") != "default":
            raise NotFound(f'plugin "{ipam_body["Driver"]}" not found')
        options = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        labels = {str(k): str(v) for k, v in (body.get("Labels") or {}).items()}
        subnet, gateway, ip_range, aux = ipam.parse_ipam(list(ipam_body.get("Config") or []))
        async with self.lock:
            if any(n.name == name for n in self.networks.values()):
                raise Conflict(f"network with name {name} already exists")
            ipam.mtu_of(options)
            ipam.big_tcp_of(options)
            bridge_name = options.get(ipam.BRIDGE_NAME_OPTION, "")
            if len(bridge_name) > 15 or "/" in bridge_name or " " in bridge_name:
                raise InvalidArgument(
                    f"invalid bridge name {bridge_name!r} (15 characters at most)"
                )
            if bridge_name and any(n.bridge == bridge_name for n in self.networks.values()):
                raise Conflict(f"bridge name {bridge_name} is used by another network")
            user_subnet = bool(subnet)
            if subnet:
                ipam.check_overlap(subnet, self.networks.values())
            else:
                routes = await asyncio.to_thread(links.route_destinations, self.host_netns)
                subnet = ipam.pick_subnet(self.networks.values(), routes)
            net = Network(
                id=ipam.new_id(),
                name=name,
                driver="bridge",
                created=now_rfc3339(),
                subnet=subnet,
                gateway=gateway or ipam.first_host(subnet),
                ip_range=ip_range,
                aux_addresses=aux,
                user_subnet=user_subnet,
                internal=bool(body.get("Internal")),
                attachable=bool(body.get("Attachable")),
                labels=labels,
                options=options,
            )
            try:
                await self._bring_up(net)
                await asyncio.to_thread(self.store.save, net)
            except BaseException:
                with contextlib.suppress(BerthError):
                    await asyncio.to_thread(links.remove_link, self.host_netns, net.bridge)
                raise
            self.networks[net.id] = net
        self._emit("create", net)
        log.info("network %s: created (%s, %s)", net.name, net.subnet, net.bridge)
        return net

    def active_endpoints(self, net: Network) -> list[tuple[Sandbox, Endpoint]]:
        out = []
        for sandbox in self.sandboxes.values():
            ep = sandbox.endpoint(net.id)
            if ep is not None and ep.endpoint_id and sandbox.active:
                out.append((sandbox, ep))
        return out

    async def remove(self, ref: str) -> None:
        async with self.lock:
            net = self.get(ref)
            if net.predefined:
                raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
            if self.active_endpoints(net):
                raise Forbidden(
                    f"error while removing network: network {net.name} id {net.id} has active"
                    " endpoints"
                )
            view = self.view(net)
            await self.retired(net.id)
            if net.id in self.up:
                for hook in reversed(self.hooks):
                    await hook.network_removed(view)
            await asyncio.to_thread(links.remove_link, self.host_netns, net.bridge)
            self.up.discard(net.id)
            await asyncio.to_thread(self.store.delete, net.id)
            del self.networks[net.id]
            self.taken.pop(net.id, None)
        self._emit("destroy", net)
        log.info("network %s: removed", net.name)

    async def prune(self, keep: Any = None) -> list[str]:
        gone = []
        for net in list(self.networks.values()):
            if net.predefined or self.active_endpoints(net) or (keep and keep(net)):
                continue
            with contextlib.suppress(NotFound, Forbidden):
                await self.remove(net.id)
                gone.append(net.name)
        return gone

    def containers_of(self, net: Network) -> dict[str, Any]:
        """``GET /networks/{id}``'s ``Containers``: its running endpoints."""
        out = {}
        for sandbox, ep in self.active_endpoints(net):
            rec = self._record(sandbox.container_id)
            out[sandbox.container_id] = {
                "Name": rec.name.lstrip("/") if rec else "",
                "EndpointID": ep.endpoint_id,
                "MacAddress": ep.mac,
                "IPv4Address": f"{ep.ip}/{ep.prefix_len}",
                "IPv6Address": "",
            }
        return out

    # ----------------------------------------------------------------- at container create
    def plan(self, cid: str, body: dict[str, Any]) -> Sandbox:
        """The container's networking from its create body, validated (nothing is made)."""
        host_config = body.get("HostConfig") or {}
        publication(body, host_config)  # bad ports refused at create, as dockerd does
        mode = str(host_config.get("NetworkMode") or "default")
        if mode == "default":
            mode = "bridge"
        endpoints_config = {
            ("bridge" if key == "default" else key): value or {}
            for key, value in dict(
                (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
            ).items()
        }
        if len(endpoints_config) > 1:
            raise InvalidArgument(
                "Container cannot be connected to network endpoints: "
                + ", ".join(sorted(endpoints_config))
            )
        sandbox = Sandbox(cid, mode, runtime_netns=mode == "none")
        if mode in ("host", "none"):
            if endpoints_config and next(iter(endpoints_config)) not in (mode, ""):
                raise InvalidArgument(
                    "container sharing network namespace with another container or host"
                    " cannot be connected to any other network"
                )
            return sandbox
        if mode.startswith("container:"):
            if self.containers is None:
                raise InvalidArgument(f"invalid network mode: {mode}")
            target = self.containers.get(mode.partition(":")[2])
            other = self.sandboxes.get(target.id)
            if other is None or not other.own_netns:
                raise InvalidArgument(
                    f"cannot join the network namespace of container {target.id}: it has none"
                    " of its own"
                )
            sandbox.joined = target.id
            return sandbox
        net = self.get(mode)
        if not net.is_bridge:
            raise InvalidArgument(f"invalid network mode: {mode}")
        known = mode in endpoints_config or net.name in endpoints_config
        config = endpoints_config.get(mode) or endpoints_config.get(net.name) or {}
        if endpoints_config and not known:
            other_name = next(iter(endpoints_config))
            self.get(other_name)  # unknown: 404 as dockerd
            raise InvalidArgument(
                f"Container cannot be connected to network endpoints: {mode}, {other_name}"
            )
        sandbox.mode = net.name if net.user_defined else "bridge"
        sandbox.endpoints.append(self._endpoint(net, config))
        return sandbox

    def _endpoint(self, net: Network, config: dict[str, Any]) -> Endpoint:
        aliases = [str(a) for a in config.get("Aliases") or []]
        static_ip = str((config.get("IPAMConfig") or {}).get("IPv4Address") or "")
        if not net.user_defined and aliases:
            raise InvalidArgument(
                "network-scoped alias is supported only for containers in user defined networks"
            )
        if static_ip:
            if not net.user_defined:
                raise InvalidArgument(
                    "user specified IP address is supported on user defined networks only"
                )
            if not net.user_subnet:
                raise InvalidArgument(
                    "user specified IP address is supported only when connecting to networks"
                    " with user configured subnets"
                )
            static_ip = ipam.check_static(net, static_ip, set())
        return Endpoint(net.id, net.name, aliases, static_ip)

    def spec_namespace(self, sandbox: Sandbox) -> str | None:
        """The namespace path the spec joins (None: the runtime's default for the mode)."""
        if sandbox.pinned:
            return self.pin(sandbox.container_id)
        if sandbox.joined:
            return self.pin(sandbox.joined)
        return None

    def file_mounts(
        self, sandbox: Sandbox, directory: str, taken: Iterable[str]
    ) -> list[dict[str, Any]]:
        source = self.paths.container(sandbox.joined) if sandbox.joined else directory
        return [dict(m) for m in files.bind_mounts(source, taken)]

    def write_files(self, sandbox: Sandbox, directory: str, rec_like: dict[str, Any]) -> None:
        """hostname, hosts and resolv.conf in ``directory`` (blocking)."""
        config = rec_like.get("Config") or {}
        host_config = rec_like.get("HostConfig") or {}
        hostname = str(config.get("Hostname") or "")
        domain = str(config.get("Domainname") or "")
        files.write_in_place(os.path.join(directory, "hostname"), hostname + "\n")
        extra = [str(h) for h in host_config.get("ExtraHosts") or []]
        if sandbox.mode == "host":
            base = files.host_hosts()
            addresses: list[tuple[str, list[str]]] = []
        else:
            base = files.LOCALHOST
            full = f"{hostname}.{domain}" if domain else hostname
            names = [full, hostname] if domain else [hostname]
            addresses = [(ep.ip, names) for ep in sandbox.endpoints if ep.ip]
        files.write_in_place(os.path.join(directory, "hosts"), files.hosts(addresses, extra, base))
        user_net = any(
            (n := self.networks.get(ep.network_id)) is not None and n.user_defined
            for ep in sandbox.endpoints
        )
        if sandbox.mode == "host" and not (host_config.get("Dns") or host_config.get("DnsSearch")
                                           or host_config.get("DnsOptions")):  # fmt: skip
            text = files.host_resolv_conf().render()
        else:
            text = files.resolv_conf(
                files.host_resolv_conf(),
                embedded_dns=user_net,
                dns=[str(s) for s in host_config.get("Dns") or []],
                dns_search=[str(s) for s in host_config.get("DnsSearch") or []],
                dns_options=[str(s) for s in host_config.get("DnsOptions") or []],
            )
        files.write_in_place(os.path.join(directory, "resolv.conf"), text)

    def register(self, sandbox: Sandbox) -> None:
        """A created container's plan, kept (its ``network.json`` is saved by then)."""
        self.sandboxes[sandbox.container_id] = sandbox

    # ----------------------------------------------------------------- at container start
    async def attach(self, rec: Record) -> None:
        """Make the container's networking before its process starts (see the rules)."""
        sandbox = self.sandboxes.get(rec.id)
        if sandbox is None:  # made before berthd had networks: its spec has its own netns
            return
        directory = self.paths.container(rec.id)
        async with self.lock:
            if sandbox.joined:
                await self._pin_joined(sandbox.joined)
                return
            if not sandbox.own_netns:
                await asyncio.to_thread(self.write_files, sandbox, directory, rec.to_json())
                return
            try:
                await self._attach_locked(rec.id, rec.to_json(), sandbox, directory)
            except BaseException:
                await self._release_locked(sandbox)
                await self.retired(container=rec.id)  # a failed start leaves nothing
                raise
        for ep in sandbox.endpoints:
            net = self.networks.get(ep.network_id)
            if net is not None:
                self._emit("connect", net, container=rec.id)

    async def _pin_joined(self, target_id: str) -> None:
        """The pin a ``container:<id>`` container joins: the target's own, or, for a namespace
        the runtime made, one made now from the target's init (kept until its release)."""
        rec, target = self._record(target_id), self.sandboxes.get(target_id)
        gone = f"cannot join network namespace of a non running container: {target_id}"
        if rec is None or target is None or not rec.running:
            raise Conflict(gone)
        path = self.pin(target_id)
        if target.pinned or os.path.lexists(path):
            return
        pid = int(rec.state.get("Pid") or 0)
        if not rec.has_process or pid <= 0:
            raise Conflict(f"Container {target_id} is restarting, wait until it is running")
        assert self.containers is not None  # (a record was found through them)
        start = await asyncio.to_thread(self.containers.init_start, target_id)
        try:
            if start is None:
                raise ProcessLookupError(errno.ESRCH, "no running init")
            await asyncio.to_thread(netns.pin_process, pid, start, path)
        except OSError as e:
            raise Conflict(f"{gone}: {e.strerror}") from e
        if not rec.has_process or rec.state.get("Pid") != pid:  # it exited meanwhile
            await asyncio.to_thread(netns.remove, path)
            raise Conflict(gone)

    async def _attach_locked(
        self, cid: str, rec_like: dict[str, Any], sandbox: Sandbox, directory: str
    ) -> None:
        for ep in sandbox.endpoints:  # all networks known before anything is made
            if ep.network_id not in self.networks:
                raise NotFound(f"network {ep.network_name} not found")
        sandbox.new_sandbox_id()
        pin = self.pin(cid)
        if os.path.lexists(pin):  # a stale one from a crash
            await asyncio.to_thread(netns.remove, pin)
        if sandbox.pinned:
            await asyncio.to_thread(netns.create, pin)
        for index, ep in enumerate(sandbox.endpoints):
            await self._add_endpoint(sandbox, ep, index == 0, directory)
        view = self.sandbox_view(sandbox)
        done: list[NetworkHooks] = []
        try:
            for hook in self.hooks:
                await hook.sandbox_ready(view)
                done.append(hook)
        except BaseException:
            for hook in reversed(done):
                await hook.sandbox_gone(view)
            raise
        sandbox.active = True
        await asyncio.to_thread(self._write_started, sandbox, directory, rec_like)

    def _write_started(self, sandbox: Sandbox, directory: str, rec_like: dict[str, Any]) -> None:
        """A sandbox now up: its /etc files and its ``network.json``, in one trip to a thread."""
        self.write_files(sandbox, directory, rec_like)
        sandbox.save(directory, False)

    def _ifname(self, sandbox: Sandbox) -> str:
        used = {ep.ifname for ep in sandbox.endpoints if ep.ifname}
        n = 0
        while f"eth{n}" in used:
            n += 1
        return f"eth{n}"

    async def _add_endpoint(
        self, sandbox: Sandbox, ep: Endpoint, route: bool, directory: str
    ) -> None:
        net = self.networks[ep.network_id]
        if net.id not in self.up:
            await self._bring_up(net)
        if ep.static_ip:
            await self.retired(net.id, ep.static_ip)
        taken = self.taken.setdefault(net.id, set())
        ip = (
            ipam.check_static(net, ep.static_ip, taken)
            if ep.static_ip
            else ipam.allocate(net, taken)
        )
        taken.add(ip)
        ep.ip, ep.prefix_len, ep.gateway, ep.mac = ip, net.prefix_len, net.gateway, ipam.mac_of(ip)
        ep.endpoint_id = secrets.token_hex(32)
        ep.ifname = self._ifname(sandbox) if not ep.ifname else ep.ifname
        ep.host_if = "veth" + secrets.token_hex(4)[:7]
        await asyncio.to_thread(sandbox.save, directory, False)  # the veth's name first
        await asyncio.to_thread(
            lambda: links.add_endpoint(
                self.host_netns,
                self.pin(sandbox.container_id),
                host_if=ep.host_if,
                bridge=net.bridge,
                ifname=ep.ifname,
                ip=ip,
                prefix_len=ep.prefix_len,
                mac=ep.mac,
                gateway=None if (net.internal or not route) else net.gateway,
                mtu=net.mtu,
                big_tcp=net.big_tcp,
            )
        )

    # ----------------------------------------------------------------- release
    async def release(self, cid: str) -> None:
        """Undo ``attach`` (idempotent): hooks told, veths and pin removed, addresses freed."""
        sandbox = self.sandboxes.get(cid)
        if sandbox is None:
            return
        async with self.lock:
            was = [ep for ep in sandbox.endpoints if ep.endpoint_id]
            await self._release_locked(sandbox)
        for ep in was:
            net = self.networks.get(ep.network_id)
            if net is not None:
                self._emit("disconnect", net, container=cid)

    async def _release_locked(self, sandbox: Sandbox) -> None:
        if not sandbox.own_netns:
            return
        if sandbox.active:
            view = self.sandbox_view(sandbox)
            for hook in reversed(self.hooks):
                await hook.sandbox_gone(view)
        pin = self.pin(sandbox.container_id)
        if sandbox.pinned or os.path.lexists(pin):  # the runtime's: pinned if one joined it
            await asyncio.to_thread(netns.remove, pin)
        for ep in sandbox.endpoints:
            if ep.host_if:
                self._retire(sandbox.container_id, ep.network_id, ep.host_if, ep.ip)
            elif ep.ip:
                self.taken.get(ep.network_id, set()).discard(ep.ip)
            ep.clear()
        sandbox.active = False
        sandbox.sandbox_id = ""
        directory = self.paths.container(sandbox.container_id)
        if os.path.isdir(directory):
            await asyncio.to_thread(sandbox.save, directory, False)

    def _retire(self, cid: str, network_id: str, host_if: str, ip: str) -> None:
        """Delete a released endpoint's veth in the background, then free its address.

        Deleting a veth waits out the kernel's RCU grace periods (15-40 ms here): off the exit
        path, the address stays taken until the link is gone (no duplicate on the bridge)."""

        async def retire() -> None:
            try:
                await asyncio.to_thread(links.remove_link, self.host_netns, host_if)
            except BerthError as e:
                log.warning("container %s: veth %s: %s", cid, host_if, e.message)
            finally:
                if ip:
                    self.taken.get(network_id, set()).discard(ip)
                self.retiring.pop(host_if, None)

        task = asyncio.get_running_loop().create_task(retire())
        self.retiring[host_if] = (cid, network_id, ip, task)

    async def retired(
        self, network_id: str | None = None, ip: str | None = None, container: str | None = None
    ) -> None:
        """Wait for the veths being deleted (all, or one network's, address's, container's)."""
        for cid, net_id, held, task in list(self.retiring.values()):
            if network_id in (None, net_id) and ip in (None, held) and container in (None, cid):
                await asyncio.shield(task)

    async def forget(self, cid: str) -> None:
        """The container is being removed: release, then drop its plan."""
        await self.release(cid)
        self.sandboxes.pop(cid, None)

    # ----------------------------------------------------------------- DNS
    def dns_names(self, rec: Record, ep: Endpoint) -> list[str]:
        names = [rec.name.lstrip("/"), *ep.aliases, rec.id[:12]]
        return list(dict.fromkeys(names))

    def lookup(self, container_id: str, name: str) -> list[str] | None:
        """The IPv4 addresses ``name`` means to that container on its user-defined networks
        (container name, alias, short id, or ``<name>.<network>``); None when nothing."""
        asker = self.sandboxes.get(container_id)
        if asker is None or not asker.active:
            return None
        name = name.lower().rstrip(".")
        found: list[str] = []
        for mine in asker.endpoints:
            net = self.networks.get(mine.network_id)
            if net is None or not net.user_defined or not mine.endpoint_id:
                continue
            wanted = {name}
            suffix = "." + net.name.lower()
            if name.endswith(suffix):
                wanted.add(name[: -len(suffix)])
            for sandbox, ep in self.active_endpoints(net):
                rec = self._record(sandbox.container_id)
                if rec is None or not rec.running:
                    continue
                if wanted & {n.lower() for n in self.dns_names(rec, ep)} and ep.ip not in found:
                    found.append(ep.ip)
        return found or None

    # ----------------------------------------------------------------- what inspect shows
    def settings(self, rec: Record) -> dict[str, Any]:
        """inspect's ``NetworkSettings`` fields this module owns (dockerd 28's shape)."""
        sandbox = self.sandboxes.get(rec.id)
        out = empty_network_settings()
        if sandbox is None:
            return out
        running = rec.running and sandbox.active
        if running:
            out["SandboxID"] = sandbox.sandbox_id
            pid = rec.state.get("Pid")  # the runtime's own namespace: reached by its init's
            runtimes = not sandbox.pinned and pid
            out["SandboxKey"] = f"/proc/{pid}/ns/net" if runtimes else self.pin(rec.id)
            if self.ports is not None:
                out["Ports"] = self.ports.ports_of(rec.id).inspect_json()
        if sandbox.mode in ("host", "none"):
            out["Networks"][sandbox.mode] = Endpoint(
                self._id_of(sandbox.mode), sandbox.mode
            ).settings(None)
        for ep in sandbox.endpoints:
            net = self.networks.get(ep.network_id)
            name = net.name if net else ep.network_name
            dns = self.dns_names(rec, ep) if net is not None and net.user_defined else None
            out["Networks"][name] = ep.settings(dns)
            if name == "bridge" and ep.endpoint_id:
                out.update(EndpointID=ep.endpoint_id, Gateway=ep.gateway, IPAddress=ep.ip,
                           IPPrefixLen=ep.prefix_len, MacAddress=ep.mac)  # fmt: skip
        return out

    def file_paths(self, rec: Record) -> dict[str, str]:
        """inspect's ``HostnamePath``, ``HostsPath`` and ``ResolvConfPath``."""
        sandbox = self.sandboxes.get(rec.id)
        if sandbox is None:
            return {}
        directory = self.paths.container(sandbox.joined or rec.id)
        return {
            "HostnamePath": os.path.join(directory, "hostname"),
            "HostsPath": os.path.join(directory, "hosts"),
            "ResolvConfPath": os.path.join(directory, "resolv.conf"),
        }

    def _id_of(self, name: str) -> str:
        return next((n.id for n in self.networks.values() if n.name == name), "")

    def port_rows(self, rec: Record) -> list[dict[str, Any]]:
        """``/containers/json``'s ``Ports`` (published ones only while running)."""
        if self.ports is None or not rec.running:
            return []
        return self.ports.ports_of(rec.id).list_json()

    def summary(self, rec: Record) -> dict[str, Any]:
        """``/containers/json``'s ``NetworkSettings.Networks``."""
        return dict(self.settings(rec)["Networks"])

    def connected_to(self, rec: Record, net: Network) -> bool:
        sandbox = self.sandboxes.get(rec.id)
        return sandbox is not None and sandbox.endpoint(net.id) is not None

    # ----------------------------------------------------------------- connect, disconnect
    async def connect(self, net_ref: str, container_ref: str, config: dict[str, Any]) -> None:
        await network_connect.connect(self, net_ref, container_ref, config)

    async def disconnect(self, net_ref: str, container_ref: str, force: bool = False) -> None:
        await network_connect.disconnect(self, net_ref, container_ref, force)

    # ----------------------------------------------------------------- build steps
    def plan_build(self, step_id: str, mode: str) -> Sandbox:
        """``docker build --network``'s mode checked (``network_build``); nothing is made."""
        return network_build.plan(self, step_id, mode)

    async def attach_build(self, step_id: str, mode: str, directory: str) -> StepSandbox:
        """A RUN step's sandbox (``network_build``), its /etc files in ``directory``."""
        return await network_build.attach(self, step_id, mode, directory)

    async def release_build(self, step_id: str) -> None:
        """Undo ``attach_build`` (idempotent); ``retired(container=step_id)`` waits for its
        veth to be gone."""
        await network_build.release(self, step_id)
