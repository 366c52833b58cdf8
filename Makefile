# `make run` and `make test` each build .venv from nothing, then run.
# torch is pinned to the CPU build this repo's CI box has on disk; on a GPU box
# override it, e.g. make run TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= local,discord,slack,remote,ray,gallery,dev
STAMP := $(VENV)/.installed
# Packages are installed without byte-compiling (most modules are never imported);
# what is imported gets its .pyc written on first use, even where the shell says not to.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install run test test-fast lint bench clean browser

# pip installs torch, so the machine's own pip configuration (local wheels, index) picks the build;
# uv installs the rest: it resolves and unpacks in parallel, minutes faster than pip.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --no-compile uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/imagebot run

# The gallery's browser test drives Debian's chromium through its chromedriver, never a downloaded browser.
# Installed here when missing; without root the test is skipped, and this says how to install them.
browser:
	@test -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && apt-get install -y chromium chromium-driver; \
	  else \
	    echo "make test: the gallery's browser test is skipped: it needs Debian's chromium and chromium-driver" \
	      "(sudo apt-get install -y chromium chromium-driver)" >&2; \
	  fi; }

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	HF_HUB_OFFLINE=1 HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

# Under a minute on two cores: every test but those marked slow (worker processes, Ray, whole bots
# over the loopback fakes), and a few examples per property. mypy stays: it takes seconds.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	HF_HUB_OFFLINE=1 HYPOTHESIS_PROFILE=quick $(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/local_overhead.py
	$(BIN)/python bench/history_lookup.py
	$(BIN)/python bench/ack_latency.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/ack_latency.py --real-worker
	$(BIN)/python bench/remote_overhead.py
	$(BIN)/python bench/fairness.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/recovery.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/cold_start.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/batching.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/ray_scaling.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/controlnet_switch.py
	$(BIN)/python bench/gallery_load.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
