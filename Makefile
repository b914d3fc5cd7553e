# Two commands (README, "Quick start"):  make demo   and   make test
# Both create .venv with Python 3.11 and install rawlab with its extras on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,train,notebooks,export,onnx,dtmodel,serve

.PHONY: demo test test-fast lint install clean

$(BIN)/.rawlab-installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "rawlab needs Python 3.11 or newer, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/.rawlab-installed

demo: install
	$(BIN)/rawlab demo rawlab-demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -m 'not slow' -q

lint: install
	$(BIN)/ruff check rawlab tests benchmarks
	$(BIN)/ruff format --check rawlab tests benchmarks

clean:
	rm -rf $(VENV) rawlab-demo .pytest_cache
