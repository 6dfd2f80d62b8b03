# The README's two commands are `make demo` and `make test`; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test unit lint bench bench-quick clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh "$(PYTHON)" "$(VENV)"
	touch $@

demo: setup  ## start a local OpenSearch, index a multilingual sample, run cross-lingual searches
	$(BIN)/milco-os demo

test: setup  ## lint, unit tests and integration tests against a real local OpenSearch node
	bash scripts/test.sh

unit: setup  ## unit tests only (no OpenSearch)
	$(BIN)/pytest tests/unit -q

bench: setup  ## benchmarks (not tests), about two hours on 2 cores (+25 min to encode the corpus once, +50 min the whole pages): encoding, latency vs BM25, index size, ingest, quality, quantisation, ml-commons, growth to 1M, Ray actors, the dense view, passages, start-up; prints the targets
	bash scripts/bench.sh

bench-quick: setup  ## the same scripts on small samples (a smoke run, a few minutes)
	bash scripts/bench.sh --quick

lint: setup
	$(BIN)/ruff check milco_os tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
