"""A container's /etc/hostname, /etc/hosts and /etc/resolv.conf, as dockerd writes them.

Rules:
- The three files live in the container's directory (``hostname``, ``hosts``,
  ``resolv.conf``) and are bind-mounted by the spec; they are written at create and again at
  each start, connect and disconnect. A rewrite is in place (truncate and write), never a
  rename, so a running container's bind mount sees it; a file that already holds the text is
  left as it is (a truncate and write costs 0.2 ms on ext4, which flushes a file truncated
  and rewritten; most starts change none of the three).
- hosts: the localhost lines dockerd writes, then ``ExtraHosts`` (``--add-host``), then each
  address of the container with its hostname (and name and aliases on user networks).
- resolv.conf: on user-defined networks ``nameserver 127.0.0.11`` (the embedded DNS), the
  host's search and options, ``options ndots:0``; elsewhere the host's, with loopback
  nameservers dropped (they mean nothing in another namespace), 8.8.8.8 and 8.8.4.4 when
  none remain; ``HostConfig.Dns``/``DnsSearch``/``DnsOptions`` replace the host's values.
- "host" mode: the host's hosts and resolv.conf as they are (plus ExtraHosts).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

EMBEDDED_DNS = "127.0.0.11"
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"
FILES = ("hostname", "hosts", "resolv.conf")
TARGETS = {"hostname": "/etc/hostname", "hosts": "/etc/hosts", "resolv.conf": "/etc/resolv.conf"}

LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::\tip6-localnet\n"
    "ff00::\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @staticmethod
    def parse(text: str) -> ResolvConf:
        servers: list[str] = []
        search: list[str] = []
        options: list[str] = []
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split(";", 1)[0].split()
            if not fields:
                continue
            if fields[0] == "nameserver" and len(fields) > 1:
                servers.append(fields[1])
            elif fields[0] in ("search", "domain"):
                search = fields[1:]
            elif fields[0] == "options":
                options.extend(fields[1:])
        return ResolvConf(tuple(servers), tuple(search), tuple(options))

    def render(self) -> str:
        lines = [f"nameserver {s}" for s in self.nameservers]
        if self.search:
            lines.append("search " + " ".join(self.search))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


def host_resolv_conf(path: str = HOST_RESOLV_CONF) -> ResolvConf:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return ResolvConf.parse(f.read())
    except OSError:
        return ResolvConf()


def _loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server).is_loopback
    except ValueError:
        return False


def resolv_conf(
    host: ResolvConf,
    embedded_dns: bool,
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_options: Sequence[str] = (),
) -> str:
    """The container's resolv.conf (see the module's rules)."""
    search = tuple(dns_search) or host.search
    options = tuple(dns_options) or host.options
    if embedded_dns:
        # the embedded DNS forwards to Dns (or the host's servers); the container sees it only
        opts = (*(o for o in options if not o.startswith("ndots:")), "ndots:0")
        if dns_options and any(o.startswith("ndots:") for o in dns_options):
            opts = options
        return ResolvConf((EMBEDDED_DNS,), search, opts).render()
    servers = tuple(dns) or tuple(s for s in host.nameservers if not _loopback(s))
    if not servers:
        servers = FALLBACK_NAMESERVERS
    return ResolvConf(servers, search, options).render()


def hosts(
    addresses: Iterable[tuple[str, Sequence[str]]],
    extra_hosts: Sequence[str] = (),
    base: str = LOCALHOST,
) -> str:
    """``base`` (the localhost lines), ``--add-host`` entries, then ``address names…``."""
    out = [base if base.endswith("\n") or not base else base + "\n"]
    for entry in extra_hosts:
        name, sep, address = entry.partition(":")
        if sep:  # "name:ip" (an IPv6 address keeps its colons)
            out.append(f"{address}\t{name}\n")
    for address, names in addresses:
        if names:
            out.append(f"{address}\t{' '.join(dict.fromkeys(names))}\n")
    return "".join(out)


def host_hosts(path: str = HOST_HOSTS) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return LOCALHOST


def write_in_place(path: str, text: str) -> None:
    """Truncate and write (a bind mount of ``path`` keeps seeing the same inode), unless it
    holds ``text`` already."""
    data = text.encode()
    try:
        with open(path, "rb") as f:
            if f.read(len(data) + 1) == data:
                return
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def bind_mounts(directory: str, taken: Iterable[str]) -> list[dict[str, object]]:
    """The spec's mounts of the three files, except where the user mounts something."""
    busy = set(taken)
    out: list[dict[str, object]] = []
    for name in FILES:
        target = TARGETS[name]
        if target in busy:
            continue
        out.append(
            {
                "destination": target,
                "type": "bind",
                "source": os.path.join(directory, name),
                "options": ["rbind", "rprivate"],
            }
        )
    return out
