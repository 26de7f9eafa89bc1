# Every target installs what it needs through `setup`, so each works alone on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

test: setup
	$(BIN)/pytest -q

# Everything this machine's weights and hardware allow; the rest is reported as skipped with the reason.
reproduce: setup
	$(BIN)/sana-eval reproduce all --out reports

# make reproduce-table1 … make reproduce-table14
reproduce-table%: setup
	$(BIN)/sana-eval reproduce table$* --out reports

clean:
	rm -rf $(VENV) .pytest_cache
