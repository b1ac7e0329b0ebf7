# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test system-deps lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

# System packages first: libvirt-python (a test dependency) compiles against libvirt-dev.
$(VENV)/.installed-test: $(VENV)/.installed scripts/system-packages.txt
	bash scripts/install-system-deps.sh
	$(PIP) install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/canopy all-in-one --data-dir var

system-deps:
	bash scripts/install-system-deps.sh

# The static checks first (a violation fails the target): lint, types, and the layers (import-linter's
# contracts in pyproject.toml), then the tests.
test: $(VENV)/.installed-test system-deps lint
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check canopy tests bench
	$(VENV)/bin/mypy canopy
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf var build *.egg-info
