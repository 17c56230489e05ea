# Two commands for a newcomer: `make test` and `make demo`. Everything else is for developers.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: test demo lint typecheck bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Creates the virtualenv, installs the project with its test extras, fetches Kafka if missing, runs pytest.
test: $(BIN)/.installed
	$(BIN)/kafka-lfs-relay sandbox fetch
	$(BIN)/pytest $(PYTEST_ARGS)

# For now the demo brings up the sandbox (three clusters and S3) and prints the endpoints; Ctrl-C stops it.
demo: $(BIN)/.installed
	$(BIN)/kafka-lfs-relay sandbox up --clusters 3 --s3 $(DEMO_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
