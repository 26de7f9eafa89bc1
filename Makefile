# Every target installs what it needs through `setup`, so each works alone on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test reproduce reproduce-table6 clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

test: setup
	$(BIN)/pytest -q

# Everything this machine's weights and hardware allow; the rest is reported as skipped with the reason.
reproduce: reproduce-table6

reproduce-table6: setup
	$(BIN)/sana-eval reproduce table6 --out reports

clean:
	rm -rf $(VENV) .pytest_cache
