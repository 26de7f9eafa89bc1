# Device call (H200, carry .whl with diffusers 0.42.1 and importlib_metadata): the 8-bit GEMM's GPU tests first
# (the suite's quantised rows need it), the grid with the peer, the cross-attention backends,
# 0.6B at 4K, the other GPU tests. Budget: 90 + 250 + 30 + 60 + 150 s, under the 600 s of one call.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=reports/2026-12-03-07a3872-h200
T="python3 -m pytest -q -p no:cacheprovider -rf --tb=short"
timeout 90 $T tests/test_quantize.py -k "gpu and (gemm or tma)" > $OUT/gpu-tests-gemm.log 2>&1
timeout 250 python3 -m sana_eval bench suite sana --models Sana-0.6B Sana-1.6B --resolutions 1024 --batch 16 1 \
  --dtype fp16 --quantize none w8a8 fp8 --peer --out $OUT/suite > $OUT/suite.log 2>&1
timeout 30 python3 $R/xattn.py > $OUT/xattn.jsonl 2> $OUT/xattn.err
timeout 60 python3 -m sana_eval bench e2e --preset Sana_600M_1024px --resolution 4096 --batch 1 --dtype fp16 \
  > $OUT/e2e-4k.jsonl 2> $OUT/e2e-4k.err
timeout 150 $T tests/test_quantize.py tests/test_kernels.py tests/test_cuda_graph.py -k "gpu or epilogue" > $OUT/gpu-tests.log 2>&1
tail -n 2 $OUT/*.log
