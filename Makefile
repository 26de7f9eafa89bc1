# Every target installs what it needs through `setup`, so each works alone on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lint test smoke gpu-test test-mplug test-mmdet bench reproduce evaluate clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

# ruff, configured in pyproject.toml: pycodestyle, pyflakes, import order, bugbear, absolute imports only.
lint: setup
	$(BIN)/ruff check .

test: setup
	$(BIN)/pytest -q

# The whole chain (generate, every scorer, a report) on tiny random models: a check, not a reproduction.
smoke: setup
	$(BIN)/sana-eval smoke --out reports/smoke

# Tests that need a CUDA GPU (full-size parity); elsewhere they skip.
gpu-test: setup
	$(BIN)/pytest -q tests/test_transformer.py tests/test_kernels.py tests/test_text_encoder.py -k gpu
	$(BIN)/pytest -q tests/test_cuda_graph.py tests/test_quantize.py

# The official DPG-Bench VQA (ModelScope mPLUG) needs its own environment: its pins (transformers 4.x, fairseq,
# built from source with a C compiler) clash with ours. Builds .venv-mplug and runs the mPLUG backend's test there.
MPLUG_VENV := .venv-mplug
test-mplug:
	python3 -m venv $(MPLUG_VENV)
	$(MPLUG_VENV)/bin/pip install -q "torch>=2.4" torchvision "transformers==4.57.6" "modelscope[framework]==1.40.2" \
		"timm==1.0.31" "librosa==0.11.0" "opencv-python-headless==5.0.0.93" "rapidfuzz==3.14.6" "decord==0.6.0" \
		"unicodedata2==18.0.0" "zhconv==1.4.3" "Cython==3.3.1" "wheel==0.48.0" pytest pillow numpy
	$(MPLUG_VENV)/bin/pip install -q --no-build-isolation "fairseq-fixed==0.12.3.1"
	PYTHONPATH=. HF_HUB_OFFLINE=1 $(MPLUG_VENV)/bin/python -m pytest -q tests/test_vqa_mplug.py

# GenEval's official detector (mmdet 2.x Mask2Former) in its own environment: mmcv-full 1.7.2 is an sdist whose ops
# are compiled here (CPU only, about 10 min on 2 cores; a GPU build needs FORCE_CUDA=1 and nvcc,
# docs/protocols.md §3.6).
# transformers is there too: the converted official checkpoint is checked against mmdet's network.
MMDET_VENV := .venv-mmdet
MMDET_SRC := $(MMDET_VENV)/src
test-mmdet:
	python3 -m venv $(MMDET_VENV)
	$(MMDET_VENV)/bin/pip install -q "torch>=2.4" torchvision "numpy==1.26.4" "setuptools<81" ninja wheel \
		"opencv-python-headless==4.10.0.84" "pycocotools==2.0.11" "matplotlib==3.9.4" "scipy==1.17.1" six \
		terminaltables "addict==2.4.0" "yapf==0.43.0" pyyaml packaging pillow pytest "transformers>=4.44" safetensors
	$(MMDET_VENV)/bin/pip download -q --no-deps --no-binary :all: --no-build-isolation -d $(MMDET_SRC) "mmcv-full==1.7.2"
	tar xzf $(MMDET_SRC)/mmcv-full-1.7.2.tar.gz -C $(MMDET_SRC)
	# torch >= 2.14's headers need C++20; mmcv-full 1.7.2 compiles its C++ ops as C++17
	sed -i "s/extra_compile_args\['cxx'\] = \['-std=c++17'\]/extra_compile_args['cxx'] = ['-std=c++20']/" \
		$(MMDET_SRC)/mmcv-full-1.7.2/setup.py
	MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 $(MMDET_VENV)/bin/pip install -q --no-deps --no-build-isolation \
		$(MMDET_SRC)/mmcv-full-1.7.2
	$(MMDET_VENV)/bin/pip install -q --no-deps --no-build-isolation "mmdet==2.28.2"
	PYTHONPATH=. $(MMDET_VENV)/bin/python -m pytest -q -W ignore tests/test_detector_mmdet.py

# Speed of ours against the peer (diffusers) in the same run, and issue #16's end-to-end grid; needs a CUDA GPU.
bench: setup
	$(BIN)/sana-eval bench transformer --preset Sana_600M_1024px Sana_1600M_1024px --batch 1 16 --impl ours diffusers --kernels eager triton
	$(BIN)/sana-eval bench attention --tokens 1024 4096 16384 --batch 1 16 --kernels eager triton
	$(BIN)/sana-eval bench dc-ae --resolution 1024 --batch 1 4 --impl ours diffusers
	$(BIN)/sana-eval bench suite sana --resolutions 1024 --dtype fp16 --quantize none w8a8 fp8 --peer --out runs/bench-e2e
	$(BIN)/sana-eval bench suite sana --resolutions 4096 --batch 1 --dtype fp16 --out runs/bench-e2e-4k

# One checkpoint's quality row (Tables 7 and 11) on NPROC GPUs of this machine (torchrun), resumable:
#   make evaluate WEIGHTS=Sana_1600M_1024px.pth OUT=runs/sana-1.6b NPROC=8 ARGS="--mjhq data/MJHQ-30K"
NPROC ?= 1
evaluate: setup
	@test -n "$(WEIGHTS)" -a -n "$(OUT)" || { echo "make evaluate: set WEIGHTS=<checkpoint> and OUT=<folder>" >&2; exit 2; }
	$(BIN)/torchrun --standalone --nproc-per-node $(NPROC) -m sana_eval evaluate --weights $(WEIGHTS) --out $(OUT) $(ARGS)

# Everything this machine's weights and hardware allow; the rest is reported as skipped with the reason.
reproduce: setup
	$(BIN)/sana-eval reproduce all --out reports

# make reproduce-table1 … make reproduce-table14
reproduce-table%: setup
	$(BIN)/sana-eval reproduce table$* --out reports

clean:
	rm -rf $(VENV) .pytest_cache
