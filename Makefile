# Two commands on a fresh machine with Python 3.11 and make: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
DATA   := data
# A persistent local Dagster instance for the demo and the UI (tests use their own temporary ones).
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export GW_MANIFEST_URI ?= $(CURDIR)/$(DATA)/cda/manifest.json
export GW_DELTA_ROOT ?= $(CURDIR)/$(DATA)/delta

.PHONY: install demo test ui lint bench clean sample

install: $(STAMP)

# Reinstalls only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

sample: $(STAMP)
	@test -f $(GW_MANIFEST_URI) || $(BIN)/python -m guidewire_pipeline.sample generate --out $(DATA)/cda

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml sample
	$(BIN)/python -m guidewire_pipeline.demo

test: $(STAMP)
	$(BIN)/python -m pytest

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml sample
	$(BIN)/dagster dev -w workspace.yaml

lint: $(STAMP)
	$(BIN)/ruff check guidewire_pipeline tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(DATA) $(DAGSTER_HOME) .pytest_cache
