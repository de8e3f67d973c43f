# Everything a fresh clone needs: `make serve`, `make test`, `make bench`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: serve test test-fast bench venv sysdeps jsdeps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian tools used by the tests (curl + jq run the seeds' shell examples). Installed only when missing.
sysdeps:
	@bash scripts/sysdeps.sh

# The openai npm SDK pinned in tests/js/package-lock.json (tests/test_sdk_openai.py, test_form_routing.py).
JS_STAMP := tests/js/node_modules/.installed
$(JS_STAMP): tests/js/package-lock.json | sysdeps
	cd tests/js && npm ci --no-audit --no-fund
	touch $(JS_STAMP)

jsdeps: $(JS_STAMP)

serve: $(STAMP)
	$(VENV)/bin/audiorouter serve

test: $(STAMP) sysdeps jsdeps
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP) sysdeps
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache tests/js/node_modules
