# Berth: `make demo` and `make test` are the whole set-up; both run `make install` first.
# install is idempotent: Debian packages only when one is missing, the virtualenv only when
# pyproject.toml or this Makefile changed.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# busybox-static: base root filesystems; runc, crun, podman: the peers the tests and benchmarks
# compare against; libseccomp2: loaded through ctypes by the runtime; time (GNU): the
# benchmarks' peak-RSS readings; nftables: published ports, NAT and isolation of networks;
# iptables: what dockerd needs for its bridge networks (the peer in network tests and
# benchmarks); docker-registry: the reference registry, the peer of Berth's registry.
DEB_PACKAGES := busybox-static debootstrap libseccomp2 runc crun podman buildah skopeo umoci iproute2 util-linux procps time docker.io nftables iptables docker-registry

.PHONY: install demo test lint unit integration bench clean
install: $(STAMP) $(VENV)/bin/berth-runtime $(VENV)/bin/berth

$(STAMP): pyproject.toml Makefile
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	@set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
		| { grep -v "^WARNING: Location 'file:" || true; }
	@touch $@

# The fast launcher: the virtualenv's interpreter with -I -S (no site, no user paths), so a
# runtime call pays ~12 ms of interpreter start-up instead of ~50 ms.
$(VENV)/bin/berth-runtime: $(STAMP) tools/launcher.py
	@$(PY) tools/launcher.py $(VENV) $(CURDIR)/src berth-runtime berth.runtime.cli exit_main

# The same for the `berth` command line (`berth ps` must answer in well under 150 ms), with
# site-packages appended to sys.path for rich, which it imports only for progress bars.
$(VENV)/bin/berth: $(STAMP) tools/launcher.py
	@$(PY) tools/launcher.py --site-packages $(VENV) $(CURDIR)/src berth berth.cli.main main

demo: install
	@$(PY) tools/demo.py

lint: install
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: install
	$(VENV)/bin/pytest -q tests/unit

test: lint
	$(VENV)/bin/pytest -q tests

bench: install
	$(PY) bench/runtime_bench.py
	$(PY) bench/engine_bench.py
	$(PY) bench/network_bench.py
	$(PY) bench/registry_bench.py

clean:
	rm -rf $(VENV) build src/*.egg-info
