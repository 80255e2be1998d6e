"""Container records as berthd keeps them: value helpers shared by ``containers`` and the API.

Rules:
- One JSON file per container, ``<containers>/<id>/container.json``, written atomically
  (tmp + fsync + rename); field names are Docker's (``Id``, ``Name``, ``State`` …) so the
  inspect document is the record plus computed fields.
- Names follow Docker's rules: ``/name``, ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``; absent names are
  generated ``adjective_surname`` as dockerd's names-generator makes them.
- Times are RFC 3339 with nanoseconds (Go's RFC3339Nano); a time never set is Go's zero time.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import random
import re
import secrets
import signal as signals
import time
from dataclasses import dataclass, field
from typing import Any

from berth.engine.container_mounts import inspect_rows
from berth.errors import InvalidArgument
from berth.humanize import human_duration
from berth.runtime import store as runtime_store

ZERO_TIME = "0001-01-01T00:00:00Z"
RECORD = "container.json"
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_ADJECTIVES_TEXT = (
    "admiring adoring agitated amazing angry awesome blissful bold boring brave busy charming "
    "clever compassionate competent condescending confident cool cranky crazy dazzling "
    "determined distracted dreamy eager ecstatic elastic elated elegant eloquent epic "
    "exciting fervent festive flamboyant focused friendly frosty funny gallant gifted goofy "
    "gracious great happy hardcore heuristic hopeful hungry infallible inspiring intelligent "
    "interesting jolly jovial keen kind laughing loving lucid magical modest musing mystifying "
    "naughty nervous nice nifty nostalgic objective optimistic peaceful pedantic pensive "
    "practical priceless quirky quizzical recursing relaxed reverent romantic sad serene "
    "sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty trusting "
    "unruffled upbeat vibrant vigilant vigorous wizardly wonderful xenodochial youthful "
    "zealous zen"
)
_SURNAMES_TEXT = (
    "albattani allen almeida archimedes ardinghelli babbage banach bardeen bartik bassi "
    "bell benz bhabha bhaskara blackburn blackwell bohr booth borg bose boyd brahmagupta "
    "brattain brown buck burnell cannon carson cartwright cerf chandrasekhar chaplygin "
    "chatelet chatterjee chebyshev clarke cohen colden cori cray curie darwin davinci dewdney "
    "dhawan diffie dijkstra dirac driscoll dubinsky easley edison einstein elbakyan elgamal "
    "elion ellis engelbart euclid euler faraday feistel fermat fermi feynman franklin gagarin "
    "galileo galois ganguly gates gauss germain goldberg goldstine goldwasser golick goodall "
    "haibt hamilton haslett hawking heisenberg hellman hermann herschel hertz heyrovsky "
    "hodgkin hofstadter hoover hopper hugle hypatia jackson jang jennings jepsen johnson "
    "joliot jones kalam kapitsa kare keldysh keller kepler khayyam khorana kilby kirch knuth "
    "kowalevski lalande lamarr lamport leakey leavitt lederberg lehmann lewin lichterman "
    "liskov lovelace lumiere mahavira margulis matsumoto maxwell mayer mccarthy mcclintock "
    "mclaren mclean mcnulty meitner mendel mendeleev meninsky merkle mestorf mirzakhani "
    "montalcini moore morse moser murdock napier nash neumann newton nightingale nobel noether "
    "northcutt noyce panini pare pascal pasteur payne perlman pike poincare poitras proskuriakova "
    "ptolemy raman ramanujan ride ritchie robinson roentgen rosalind rubin saha sammet sanderson "
    "satoshi shamir shannon shaw shirley shockley shtern sinoussi snyder solomon spence "
    "stonebraker sutherland swanson swartz swirles taussig tesla tharp thompson torvalds tu "
    "turing varahamihira vaughan villani visvesvaraya volhard wescoff wilbur wiles williams "
    "williamson wilson wing wozniak wright wu yalow yonath zhukovsky"
)


now_rfc3339 = runtime_store.now


def parse_rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 time (nanoseconds kept as far as a float can)."""
    if not text or text.startswith("0001-"):
        return 0.0
    main, _, frac = text.rstrip("Z").partition(".")
    zone = ""
    for sep in ("+", "-"):
        if sep in frac:
            frac, _, rest = frac.partition(sep)
            zone = sep + rest
    if not frac and len(main) > 19:
        main, zone = main[:19], main[19:]
    stamp = datetime.datetime.fromisoformat(main + (zone or "+00:00")).timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def parse_signal(text: str | int | None, default: int = signals.SIGTERM) -> int:
    """``SIGTERM``, ``TERM``, ``15`` (Docker's forms); ``InvalidArgument`` otherwise."""
    if text is None or text == "":
        return default
    if isinstance(text, int):
        return text
    value = text.strip().upper()
    if value.isdigit():
        number = int(value)
        if 0 < number < 65:
            return number
    else:
        name = value if value.startswith("SIG") else "SIG" + value
        found = getattr(signals.Signals, name, None)
        if found is not None:
            return int(found)
    raise InvalidArgument(f"Invalid signal: {text}")


def start_exit_code(message: str) -> int:
    """The ExitCode dockerd records for a start that failed (and the CLI derives)."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message or "is a directory" in message:
        return 126
    return 128


def new_id() -> str:
    return secrets.token_hex(32)


def check_name(name: str) -> str:
    """``name`` as Docker stores it (``/name``); ``InvalidArgument`` if Docker refuses it."""
    if not _NAME.match(name):
        raise InvalidArgument(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name if name.startswith("/") else "/" + name


def generate_name(taken: set[str]) -> str:
    """An ``adjective_surname`` name not in ``taken`` (``/``-prefixed names)."""
    adjectives, surnames = _ADJECTIVES_TEXT.split(), _SURNAMES_TEXT.split()
    for attempt in range(100):
        name = f"{random.choice(adjectives)}_{random.choice(surnames)}"
        if attempt >= 10:
            name += str(random.randint(0, 99))
        if "/" + name not in taken:
            return "/" + name
    return "/" + new_id()[:16]


def _state_default() -> dict[str, Any]:
    return {
        "Status": "created",
        "Running": False,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 0,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": ZERO_TIME,
        "FinishedAt": ZERO_TIME,
    }


@dataclass
class Record:
    """One container, as stored (mutable: the manager updates it and saves it)."""

    id: str
    name: str  # "/name"
    created: str
    image_id: str
    image_ref: str  # as the client gave it (Config.Image)
    config: dict[str, Any]  # Docker's Config, merged with the image's
    host_config: dict[str, Any]
    path: str = ""
    args: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=_state_default)
    restart_count: int = 0
    log_path: str = ""
    rootfs: str = ""
    mounted: bool = False  # berthd mounted the rootfs (unmount before it goes)
    # The user stopped or killed it (unless-stopped does not restart it, even at daemon start)
    manually_stopped: bool = False
    exec_ids: list[str] = field(default_factory=list)  # execs not ended (not saved: execs.py)
    mount_points: list[dict[str, Any]] = field(default_factory=list)  # container_mounts rows

    @property
    def running(self) -> bool:
        return bool(self.state["Running"])

    @property
    def restarting(self) -> bool:
        """Waiting for its restart policy's next start (``Running`` too, as in Docker)."""
        return bool(self.state["Restarting"])

    @property
    def has_process(self) -> bool:
        """The supervisor holds it: running or paused, not waiting to restart."""
        return self.running and not self.restarting

    @property
    def paused(self) -> bool:
        return bool(self.state["Paused"])

    @property
    def status(self) -> str:
        return str(self.state["Status"])

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def auto_remove(self) -> bool:
        return bool(self.host_config.get("AutoRemove"))

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Name": self.name,
            "Created": self.created,
            "Image": self.image_id,
            "ImageRef": self.image_ref,
            "Config": self.config,
            "HostConfig": self.host_config,
            "Path": self.path,
            "Args": self.args,
            "State": self.state,
            "RestartCount": self.restart_count,
            "LogPath": self.log_path,
            "Rootfs": self.rootfs,
            "Mounted": self.mounted,
            "HasBeenManuallyStopped": self.manually_stopped,
            "MountPoints": self.mount_points,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Record:
        state = _state_default()
        state.update(d.get("State") or {})
        return Record(
            id=str(d["Id"]),
            name=str(d["Name"]),
            created=str(d["Created"]),
            image_id=str(d["Image"]),
            image_ref=str(d.get("ImageRef", "")),
            config=dict(d.get("Config") or {}),
            host_config=dict(d.get("HostConfig") or {}),
            path=str(d.get("Path", "")),
            args=[str(a) for a in d.get("Args") or []],
            state=state,
            restart_count=int(d.get("RestartCount", 0)),
            log_path=str(d.get("LogPath", "")),
            rootfs=str(d.get("Rootfs", "")),
            mounted=bool(d.get("Mounted", False)),
            manually_stopped=bool(d.get("HasBeenManuallyStopped", False)),
            mount_points=list(d.get("MountPoints") or []),
        )

    def save(self, directory: str) -> None:
        data = json.dumps(self.to_json(), separators=(",", ":")).encode() + b"\n"
        runtime_store.write_atomically(os.path.join(directory, RECORD), data, 0o600)

    @staticmethod
    def load(directory: str) -> Record:
        with open(os.path.join(directory, RECORD), encoding="utf-8") as f:
            return Record.from_json(json.load(f))

    # -- what the API shows

    def status_text(self, now: float | None = None) -> str:
        """``docker ps``'s STATUS column."""
        now = time.time() if now is None else now
        st = self.state
        if st["Restarting"]:
            ago = human_duration(now - parse_rfc3339(st["FinishedAt"]))
            return f"Restarting ({st['ExitCode']}) {ago} ago"
        if st["Running"]:
            up = human_duration(now - parse_rfc3339(st["StartedAt"]))
            if st["Paused"]:
                return f"Up {up} (Paused)"
            health = (st.get("Health") or {}).get("Status")
            if health:  # docker ps: "(healthy)", "(unhealthy)", "(health: starting)"
                return f"Up {up} ({'health: ' if health == 'starting' else ''}{health})"
            return f"Up {up}"
        if st["Status"] == "dead":
            return "Dead"
        if st["Status"] == "removing":
            return "Removal In Progress"
        if st["FinishedAt"] == ZERO_TIME:
            return "Created"
        ago = human_duration(now - parse_rfc3339(st["FinishedAt"]))
        return f"Exited ({st['ExitCode']}) {ago} ago"

    def command(self) -> str:
        return " ".join([self.path, *self.args]).strip()

    def summary(self) -> dict[str, Any]:
        """A row of ``GET /containers/json``."""
        return {
            "Id": self.id,
            "Names": [self.name],
            "Image": self.image_ref or self.image_id,
            "ImageID": self.image_id,
            "Command": self.command(),
            "Created": int(parse_rfc3339(self.created)),
            "Ports": [],
            "Labels": self.labels,
            "State": self.status,
            "Status": self.status_text(),
            "HostConfig": {"NetworkMode": self.host_config.get("NetworkMode") or "default"},
            "NetworkSettings": {"Networks": {}},
            "Mounts": inspect_rows(self.mount_points),
        }

    def inspect(self, driver: str, upper: str = "") -> dict[str, Any]:
        """``GET /containers/{id}/json``: Docker's document."""
        host_config = copy.deepcopy(self.host_config)
        host_config.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
        if not host_config.get("LogConfig", {}).get("Type"):
            host_config["LogConfig"] = {"Type": "json-file", "Config": {}}
        host_config.setdefault("NetworkMode", "default")
        host_config.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
        state = dict(self.state)
        return {
            "Id": self.id,
            "Created": self.created,
            "Path": self.path,
            "Args": self.args,
            "State": state,
            "Image": self.image_id,
            "ResolvConfPath": "",
            "HostnamePath": "",
            "HostsPath": "",
            "LogPath": self.log_path,
            "Name": self.name,
            "RestartCount": self.restart_count,
            "Driver": driver,
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": list(self.exec_ids) or None,
            "HostConfig": host_config,
            "GraphDriver": {"Name": driver, "Data": {"UpperDir": upper, "MergedDir": self.rootfs}},
            "Mounts": inspect_rows(self.mount_points),
            "Config": self.config,
            "NetworkSettings": {
                "Bridge": "",
                "SandboxID": "",
                "HairpinMode": False,
                "Ports": {},
                "SandboxKey": "",
                "Gateway": "",
                "IPAddress": "",
                "IPPrefixLen": 0,
                "MacAddress": "",
                "Networks": {},
            },
        }


def merged_config(body: dict[str, Any], image_config: dict[str, Any]) -> dict[str, Any]:
    """Docker's ``Config`` of a new container: the create body's, with the image's defaults
    (Env merged by key, Cmd from the image unless an Entrypoint is given, labels merged)."""
    out: dict[str, Any] = {
        k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")
    }
    env: dict[str, str] = {}
    for entry in [*(image_config.get("Env") or []), *(body.get("Env") or [])]:
        key = entry.split("=", 1)[0]
        env[key] = entry
    out["Env"] = list(env.values()) or None
    entrypoint = body.get("Entrypoint")
    cmd = body.get("Cmd")
    if not entrypoint:
        entrypoint = image_config.get("Entrypoint")
        if not cmd:
            cmd = image_config.get("Cmd")
    out["Entrypoint"] = entrypoint or None
    out["Cmd"] = cmd or None
    out["WorkingDir"] = body.get("WorkingDir") or image_config.get("WorkingDir") or ""
    out["User"] = body.get("User") or image_config.get("User") or ""
    labels = dict(image_config.get("Labels") or {})
    labels.update(body.get("Labels") or {})
    out["Labels"] = labels
    image_check = image_config.get("Healthcheck")
    if image_check:  # moby's merge: the container's fields, the image's where unset
        check = dict(body.get("Healthcheck") or {})
        for key, value in image_check.items():
            if not check.get(key):
                check[key] = value
        out["Healthcheck"] = check
    if not out.get("StopSignal") and image_config.get("StopSignal"):
        out["StopSignal"] = image_config["StopSignal"]
    for key, default in (
        ("Hostname", ""),
        ("Domainname", ""),
        ("AttachStdin", False),
        ("AttachStdout", False),
        ("AttachStderr", False),
        ("Tty", False),
        ("OpenStdin", False),
        ("StdinOnce", False),
        ("Image", ""),
        ("Volumes", None),
        ("OnBuild", None),
    ):
        out.setdefault(key, default)
    return out
