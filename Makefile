# Every target installs what it needs through `setup`, so each works alone on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test smoke gpu-test bench reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

test: setup
	$(BIN)/pytest -q

# The whole chain (generate, every scorer, a report) on tiny random models: a check, not a reproduction.
smoke: setup
	$(BIN)/sana-eval smoke --out reports/smoke

# Tests that need a CUDA GPU (full-size parity); elsewhere they skip.
gpu-test: setup
	$(BIN)/pytest -q tests/test_transformer.py tests/test_kernels.py -k gpu

# Speed of ours against the peer (diffusers) in the same run; needs a CUDA GPU.
bench: setup
	$(BIN)/sana-eval bench --preset Sana_600M_1024px Sana_1600M_1024px --batch 1 16 --impl ours diffusers --kernels eager triton
	$(BIN)/sana-eval bench --component attention --tokens 1024 4096 16384 --batch 1 16 --kernels eager triton
	$(BIN)/sana-eval bench --component dc-ae --resolution 1024 --batch 1 4 --impl ours diffusers

# Everything this machine's weights and hardware allow; the rest is reported as skipped with the reason.
reproduce: setup
	$(BIN)/sana-eval reproduce all --out reports

# make reproduce-table1 … make reproduce-table14
reproduce-table%: setup
	$(BIN)/sana-eval reproduce table$* --out reports

clean:
	rm -rf $(VENV) .pytest_cache
