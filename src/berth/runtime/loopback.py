"""Bringing up ``lo`` in a container's new network namespace, when the config asks for it.

Why: a new network namespace starts with its loopback down, so a program that talks to itself
(a healthcheck fetching its own page from 127.0.0.1) gets "Network is unreachable". runc leaves
that to its caller (Docker's network setup raises lo in every container, even with
``--network none``); Berth's engine asks its runtime instead, with the annotation
``LOOPBACK_ANNOTATION: "up"``, and the init raises lo before it drops its capabilities.

Rules: only for a network namespace the container creates (a joined one belongs to someone
else); two ioctls on a datagram socket (``SIOCGIFFLAGS``, ``SIOCSIFFLAGS``), no netlink, and the
modules it needs imported only when it runs (this module is on every init's path).
"""

from __future__ import annotations

from berth.errors import BerthError

LOOPBACK_ANNOTATION = "io.berth.loopback"
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags in a 24-byte union


def wanted(annotations: dict[str, str], namespaces: set[str], joined: set[str]) -> bool:
    """Whether the init should raise lo: asked for, in a network namespace of its own."""
    return (
        annotations.get(LOOPBACK_ANNOTATION) == "up"
        and "network" in namespaces
        and "network" not in joined
    )


def bring_up(name: str = "lo") -> None:
    """Set IFF_UP on interface ``name`` of the calling process's network namespace."""
    import _socket  # here: most inits never come this way
    import fcntl
    import struct

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack(_IFREQ, name.encode(), 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(
                sock.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, name.encode(), flags | IFF_UP)
            )
    except OSError as e:
        raise BerthError(
            f"annotations[{LOOPBACK_ANNOTATION!r}]: cannot bring up {name}: {e}"
        ) from e
    finally:
        sock.close()
