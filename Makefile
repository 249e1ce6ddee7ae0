# The two quickstart commands: `make up` runs the suite, `make test` runs the tests.
# Each sets itself up on a fresh Debian / Python 3.11 machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch goes in first and alone: a plain `torch` requirement would pull a CUDA build. On a GPU
# machine, set TORCH_SPEC to the CUDA build you want before `make venv`.
TORCH_SPEC ?= torch==2.13.0
# Debian packages the tests use: espeak-ng makes the synthetic test songs' vocals, chromium
# runs the browser tests, ffmpeg decodes m4a/aac, openssl makes the TLS tests' certificates;
# prometheus and postgresql serve the metrics and shared-store tests (started unprivileged in temp
# dirs); docker-compose validates compose.yaml (no engine runs).
TEST_DEBS := espeak-ng libespeak-ng1 chromium ffmpeg openssl prometheus postgresql docker-compose

.PHONY: venv up test lint protos web system-deps clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

up: venv
	$(BIN)/roar up

test: venv system-deps lint
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Regenerates roar/v1 from protos/ (tests/test_protos.py fails when they differ).
protos: venv
	$(BIN)/python tools/gen_protos.py

# Rebuilds the web page bundle in orchestrator/static (needs Node; users get it prebuilt).
web: venv
	cd web && npm ci --no-audit --no-fund && npm run build

# Installs what is missing of TEST_DEBS when we may (root or sudo); tests that need a missing
# one skip with the reason.
system-deps:
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  echo "installing $$missing"; \
	  ($$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	    || echo "could not install $$missing: the tests that need them will skip"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
