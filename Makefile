# kefu — one-command set-up. `make serve` answers on http://127.0.0.1:8000; `make test` runs the suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kefu-installed
KEFU := $(BIN)/kefu
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help setup browser model index serve test lint typecheck unit eval calibrate bench soak clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,milvus]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install kefu with dev extras (quick when done)

# Browser tests use Debian's chromium: Playwright's own browser download cannot work offline.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# A Chinese font and an emoji font too (1.6 + 9.9 MB): without them Chromium draws every character
# (and 👍) as a box, which the tests' layout checks and the screenshots in docs/ would measure and show.
BROWSER_PACKAGES = chromium fonts-wqy-microhei fonts-noto-color-emoji
browser: ## install Debian's chromium, a Chinese font and an emoji font for the browser tests (once)
	@{ command -v $(CHROMIUM) >/dev/null && fc-list :lang=zh | grep -q . && fc-list | grep -qi emoji; } 2>/dev/null || { $(SUDO) apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; }; }
	@$(CHROMIUM) --version 2>/dev/null

model: setup ## convert the built-in model into the cache (first time only)
	$(KEFU) model prepare

index: model ## build the index of the knowledge base (incremental; no-op when unchanged)
	$(KEFU) build

serve: index ## serve the assistant (HOST=127.0.0.1 PORT=8000 by default)
	$(KEFU) serve --host $(HOST) --port $(PORT)

lint: setup ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup ## mypy
	$(BIN)/mypy kb indexer service eval kefu_cli.py tests

unit: setup browser ## pytest (the real-model tests included)
	$(BIN)/pytest

test: setup browser lint typecheck unit ## everything CI runs

eval: index ## evaluate on the labelled set; writes eval/reports/latest.{md,json}
	$(KEFU) eval report

calibrate: index ## fit decision thresholds on the dev split into the index manifest
	$(KEFU) eval calibrate

bench: index ## benchmarks; writes docs/benchmarks.md (installs Debian's wrk for the HTTP part)
	@command -v wrk >/dev/null || $(SUDO) apt-get install -y -q wrk >/dev/null || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q wrk >/dev/null; }
	$(BIN)/python -m eval.bench

soak: index ## bounded soak + burst on loopback; writes docs/reliability.json
	$(BIN)/python -m eval.soak

clean: ## remove the venv and caches (not the model cache or indexes)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
