"""berth compose's model: files, .env, interpolation, merging, every syntax, and the errors.

Each bad input must be a ComposeError naming the file, the service and the field.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from berth.cli.compose.loader import ComposeError, Interpolator, parse_env_file
from berth.cli.compose.model import Dependency, Mount, Port, normalize_project_name
from berth.cli.compose.normalize import load_project

REPO = Path(__file__).resolve().parents[2]


def write(directory: Path, text: str, name: str = "compose.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load(directory: Path, text: str, environ: dict[str, str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    path = write(directory, text)
    return load_project([str(path)], environ=environ or {}, **kw)  # type: ignore[arg-type]


def error_of(directory: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ComposeError) as caught:
        load(directory, text, environ)
    return caught.value.message


# ------------------------------------------------------------------ interpolation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "a"),
        ("$A-x", "a-x"),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${A:+alt}", "alt"),
        ("${UNSET:+alt}", ""),
        ("$$A", "$A"),
        ("${UNSET:-${A}-nested}", "a-nested"),
        ("cost: $$5", "cost: $5"),
    ],
)
def test_interpolation(text: str, expected: str) -> None:
    assert Interpolator({"A": "a", "EMPTY": ""}, "f.yaml").text(text, "x") == expected


def test_unset_variable_is_blank_with_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    interpolator = Interpolator({}, "f.yaml")
    assert interpolator.text("${NOPE}/${NOPE}", "x") == "/"
    assert capsys.readouterr().err.count('The "NOPE" variable is not set') == 1


def test_required_variable_names_file_and_field(tmp_path: Path) -> None:
    message = error_of(tmp_path, "services:\n  web:\n    image: ${IMG:?set IMG first}\n")
    assert message == (
        f"{tmp_path}/compose.yaml: services.web.image: required variable IMG is missing a "
        "value: set IMG first"
    )


def test_invalid_interpolation_format(tmp_path: Path) -> None:
    message = error_of(tmp_path, "services:\n  web:\n    image: ${1x}\n")
    assert "services.web.image: invalid interpolation format" in message


def test_dotenv_fills_variables_and_the_shell_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# comment\nTAG=from-dotenv\nexport PORT='9000'\nOTHER=x # c\n")
    text = "services:\n  web:\n    image: app:${TAG}\n    ports: ['${PORT}:80']\n"
    project = load(tmp_path, text, {"TAG": "from-shell"})
    web = project.services["web"]
    assert web.image == "app:from-shell"
    assert web.ports == (Port(80, "9000"),)
    assert parse_env_file(str(tmp_path / ".env"))["OTHER"] == "x"


# ------------------------------------------------------------------ names


def test_project_name_from_directory_is_normalised(tmp_path: Path) -> None:
    directory = tmp_path / "_My App.v2"
    directory.mkdir()
    project = load(directory, "services:\n  web:\n    image: busybox\n")
    assert project.name == "myappv2"
    assert normalize_project_name("-x_Y") == "x_y"
    assert project.networks["default"].name == "myappv2_default"


def test_project_name_precedence(tmp_path: Path) -> None:
    text = "name: fromfile\nservices:\n  web:\n    image: busybox\n"
    assert load(tmp_path, text).name == "fromfile"
    assert load(tmp_path, text, {"COMPOSE_PROJECT_NAME": "fromenv"}).name == "fromenv"
    assert load(tmp_path, text, {"COMPOSE_PROJECT_NAME": "fromenv"}, name="flag").name == "flag"
    with pytest.raises(ComposeError, match='"Bad" is not a valid project name'):
        load(tmp_path, text, name="Bad")


def test_no_file_found(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="no configuration file provided"):
        load_project([], str(tmp_path), environ={})


# ------------------------------------------------------------------ service fields


def test_ports_short_and_long(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: busybox
        ports:
          - "8080:80"
          - "127.0.0.1:5353:53/udp"
          - 9000
          - "7000-7001:70-71"
          - "6000-6009:60"
          - target: 443
            published: "8443"
            host_ip: 0.0.0.0
    """
    assert load(tmp_path, text).services["web"].ports == (
        Port(80, "8080"),
        Port(53, "5353", "127.0.0.1", "udp"),
        Port(9000, ""),
        Port(70, "7000"),
        Port(71, "7001"),
        Port(60, "6000-6009"),
        Port(443, "8443", "0.0.0.0"),
    )


@pytest.mark.parametrize("port", ["80:x", "70000", "1-3:4-5", "80/icmp", "a:b:c:d"])
def test_bad_port_names_file_service_and_field(tmp_path: Path, port: str) -> None:
    message = error_of(tmp_path, f"services:\n  web:\n    image: b\n    ports: ['{port}']\n")
    assert message.startswith(f"{tmp_path}/compose.yaml: services.web.ports[0]: invalid ")
    assert port in message


def test_volumes_named_bind_anonymous(tmp_path: Path) -> None:
    text = """
    services:
      db:
        image: busybox
        volumes:
          - data:/data
          - ./conf:/etc/conf:ro
          - /var/cache
          - type: bind
            source: /srv
            target: /srv
    volumes:
      data:
    """
    project = load(tmp_path, text)
    assert project.services["db"].volumes == (
        Mount("volume", "/data", "data"),
        Mount("bind", "/etc/conf", str(tmp_path / "conf"), read_only=True),
        Mount("volume", "/var/cache"),
        Mount("bind", "/srv", "/srv", create_host_path=False),
    )
    assert project.volumes["data"].name == f"{project.name}_data"


def test_undeclared_volume_and_network(tmp_path: Path) -> None:
    message = error_of(tmp_path, "services:\n  db:\n    image: b\n    volumes: [data:/d]\n")
    assert "services.db.volumes[0]" in message
    assert "undefined volume data" in message
    message = error_of(tmp_path, "services:\n  db:\n    image: b\n    networks: [back]\n")
    assert "services.db.networks.back" in message
    assert "undefined network back" in message


def test_depends_on_forms_cycles_and_order(tmp_path: Path) -> None:
    text = """
    services:
      web:
        image: b
        depends_on: [api]
      api:
        image: b
        depends_on:
          db:
            condition: service_healthy
      db:
        image: b
    """
    project = load(tmp_path, text)
    assert list(project.services) == ["db", "api", "web"]
    assert project.services["api"].depends_on == {"db": Dependency("service_healthy")}
    assert project.services["web"].depends_on == {"api": Dependency()}
    cycle = text.replace("      db:\n        image: b\n", "      db:\n        image: b\n"
                         "        depends_on: [web]\n")  # fmt: skip
    assert "dependency cycle detected: " in error_of(tmp_path, cycle)
    bad = text.replace("service_healthy", "service_ready")
    assert 'services.api.depends_on.db.condition: invalid condition "service_ready"' in (
        error_of(tmp_path, bad)
    )
    assert 'depends on undefined service "nope"' in error_of(
        tmp_path, "services:\n  a:\n    image: b\n    depends_on: [nope]\n"
    )


def test_healthcheck_forms(tmp_path: Path) -> None:
    text = """
    services:
      a:
        image: b
        healthcheck:
          test: nc -z localhost 80
          interval: 1m30s
          timeout: 500ms
          retries: 3
          start_period: 2
      b:
        image: b
        healthcheck:
          test: ["CMD", "true"]
      c:
        image: b
        healthcheck:
          disable: true
    """
    services = load(tmp_path, text).services
    a = services["a"].healthcheck
    assert a is not None
    assert a.test == ("CMD-SHELL", "nc -z localhost 80")
    assert (a.interval, a.timeout, a.retries, a.start_period) == (
        90_000_000_000,
        500_000_000,
        3,
        2_000_000_000,
    )
    assert services["b"].healthcheck.test == ("CMD", "true")  # type: ignore[union-attr]
    assert services["c"].healthcheck.test == ("NONE",)  # type: ignore[union-attr]
    message = error_of(tmp_path, text.replace("1m30s", "soon"))
    assert 'services.a.healthcheck.interval: invalid duration "soon"' in message


def test_limits_both_forms(tmp_path: Path) -> None:
    text = """
    services:
      a:
        image: b
        mem_limit: 64m
        cpus: 0.5
        pids_limit: 32
      b:
        image: b
        mem_limit: 1g
        deploy:
          replicas: 2
          resources:
            limits: {cpus: "1.5", memory: 32M, pids: 10}
    """
    services = load(tmp_path, text).services
    a, b = services["a"], services["b"]
    assert (a.memory, a.nano_cpus, a.pids_limit, a.scale) == (64 << 20, 500_000_000, 32, 1)
    assert (b.memory, b.nano_cpus, b.pids_limit, b.scale) == (32 << 20, 1_500_000_000, 10, 2)
    message = error_of(tmp_path, text.replace("32M", "lots"))
    assert 'services.b.deploy.resources.limits.memory: invalid size "lots"' in message


def test_environment_env_file_and_commands(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("FROM_FILE=1\nOVERRIDDEN=file\nFROM_SHELL\n")
    text = """
    services:
      a:
        image: b
        env_file: app.env
        environment:
          - OVERRIDDEN=inline
          - PASSED
          - MISSING
        command: sh -c 'echo "hi there"'
        entrypoint: ["/bin/env"]
        restart: no
    """
    a = load(tmp_path, text, {"PASSED": "p", "FROM_SHELL": "s"}).services["a"]
    assert a.environment == {
        "FROM_FILE": "1", "OVERRIDDEN": "inline", "FROM_SHELL": "s", "PASSED": "p",
    }  # fmt: skip
    assert a.command == ("sh", "-c", 'echo "hi there"')
    assert a.entrypoint == ("/bin/env",)
    assert a.restart == "no"
    message = error_of(tmp_path, text.replace("app.env", "missing.env"))
    assert "missing.env not found" in message


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("    image: b\n    links: [x]\n", "services.web.links: unknown or unsupported"),
        ("    command: 3\n    image: b\n", "services.web.command: must be a string or a list"),
        ("    image: b\n    restart: sometimes\n", 'invalid restart policy "sometimes"'),
        ("    build: {}\n    image: b\n    scale: -1\n", "services.web.scale: must be 0 or more"),
        ("    tty: yes please\n    image: b\n", "services.web.tty: must be a boolean"),
        ("    environment: 5\n    image: b\n", "services.web.environment: must be a mapping"),
        ("    ports: ['80']\n", "services.web: has neither an image nor a build"),
    ],
)
def test_bad_service_fields(tmp_path: Path, snippet: str, expected: str) -> None:
    message = error_of(tmp_path, "services:\n  web:\n" + snippet)
    assert message.startswith(f"{tmp_path}/compose.yaml: ")
    assert expected in message


def test_bad_documents(tmp_path: Path) -> None:
    assert "invalid YAML" in error_of(tmp_path, "services: [\n")
    assert "the top level must be a mapping" in error_of(tmp_path, "- a\n")
    assert "additional property servics is not allowed" in error_of(tmp_path, "servics: {}\n")
    assert "secrets: not supported" in error_of(
        tmp_path, "services:\n  a:\n    image: b\nsecrets: {}\n"
    )
    assert "no service is defined" in error_of(tmp_path, "x-extension: 1\nservices: {}\n")


def test_an_empty_section_in_an_override_removes_nothing(tmp_path: Path) -> None:
    base = write(tmp_path, "services:\n  web:\n    image: a\n")
    override = write(tmp_path, "services:\nvolumes:\n", "override.yaml")
    assert list(load_project([str(base), str(override)], environ={}).services) == ["web"]


def test_merging_files_names_the_file_of_the_bad_value(tmp_path: Path) -> None:
    base = write(tmp_path, "services:\n  web:\n    image: a\n    ports: ['80:80']\n")
    override = write(
        tmp_path,
        "services:\n  web:\n    image: b\n    ports: ['81:81']\n    environment: {X: '1'}\n",
        "override.yaml",
    )
    project = load_project([str(base), str(override)], environ={})
    web = project.services["web"]
    assert (web.image, web.ports, dict(web.environment)) == (
        "b", (Port(80, "80"), Port(81, "81")), {"X": "1"}
    )  # fmt: skip
    override.write_text("services:\n  web:\n    mem_limit: huge\n")
    with pytest.raises(ComposeError) as caught:
        load_project([str(base), str(override)], environ={})
    assert caught.value.message.startswith(f"{override}: services.web.mem_limit: invalid size")


def test_default_file_and_override_are_found(tmp_path: Path) -> None:
    write(tmp_path, "services:\n  web:\n    image: a\n", "docker-compose.yml")
    write(tmp_path, "services:\n  web:\n    image: c\n", "docker-compose.override.yml")
    project = load_project([], str(tmp_path), environ={})
    assert project.services["web"].image == "c"
    assert [Path(f).name for f in project.config_files] == [
        "docker-compose.yml", "docker-compose.override.yml",
    ]  # fmt: skip


def test_the_example_app_loads_with_limits_and_healthchecks() -> None:
    example = REPO / "examples" / "compose-app"
    project = load_project([str(example / "compose.yaml")], environ={})
    assert project.name == "compose-app"
    assert list(project.services) == ["kv", "api", "web"]
    for service in project.services.values():
        assert service.build is not None and service.image == f"compose-app-{service.name}"
        assert service.memory == 32 << 20 and service.pids_limit == 64 and service.nano_cpus
        assert service.healthcheck is not None and "$PORT" in service.healthcheck.test[1]
    assert project.services["web"].ports == (Port(80, "8080"),)
    assert project.services["api"].depends_on == {"kv": Dependency("service_healthy")}
    assert set(project.networks) == {"front", "back"}  # no service uses "default"


def test_network_mode(tmp_path: Path) -> None:
    from berth.cli.compose import plan

    text = """
    services:
      app:
        image: b
        network_mode: none
      sidecar:
        image: b
        network_mode: service:app
    """
    project = load(tmp_path, text)
    app, sidecar = project.services["app"], project.services["sidecar"]
    assert app.networks == {} and project.networks == {}  # no default network is made
    assert sidecar.depends_on == {"app": Dependency()}
    body = plan.create_body(project, sidecar, 1, "sha256:x")
    assert body["HostConfig"]["NetworkMode"] == f"container:{project.name}-app-1"
    assert "NetworkingConfig" not in body
    assert plan.create_body(project, app, 1, "sha256:x")["HostConfig"]["NetworkMode"] == "none"
    both = text.replace("network_mode: none", "network_mode: none\n        networks: [x]")
    assert "services.app.network_mode: cannot be combined with networks" in error_of(tmp_path, both)
    assert 'invalid network mode "vpn"' in error_of(tmp_path, text.replace("none", "vpn"))
