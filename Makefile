# Two commands matter: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# Go (bench/go, tests marked `go`): the official tarball's place unless told otherwise.
GO_BIN ?= /usr/local/go/bin
export PATH := $(GO_BIN):$(PATH)

.PHONY: demo test test-unit lint system-deps go devcluster-build venv clean

# Debian's python3 makes no venv without python3-venv: installed (alone) only when a venv
# is to be made and cannot be, so `make test-unit` and `make lint` never ask for root.
# A venv left without pip by a failed first try is made again.
$(STAMP): pyproject.toml
	test -x $(PIP) || { PYTHON=$(PYTHON) bash scripts/system-deps.sh venv && $(PYTHON) -m venv --clear $(VENV); }
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[extender,gateway,engine,replay,test,dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages used by the tests and the demo: Prometheus, dbus-daemon, openssl (and,
# with the argument `venv`, only python3-venv when the Python in use cannot make a venv).
system-deps:
	@PYTHON=$(PYTHON) bash scripts/system-deps.sh

# Go at least as new as devcluster/go/*/go.mod and bench/go/go.mod ask; fails loudly
# (not installed here).
go:
	@bash scripts/go-check.sh

devcluster-build:
	@bash devcluster/build.sh >/dev/null

demo: venv system-deps go devcluster-build
	$(PY) -m devcluster demo

test: venv system-deps go devcluster-build
	$(VENV)/bin/pytest

# Fast tests only: no cluster, no Prometheus, no D-Bus, no Go.
test-unit: venv
	$(VENV)/bin/pytest -m 'not cluster and not prometheus and not dbus and not go'

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint images/*/Dockerfile

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
