# The next device session's first call (carry .whl with diffusers 0.42.1 and importlib_metadata): the grid with the
# peer as one command (§2 of bench.md), the cross-attention backends with the `seqused_k` variant added after
# xattn.jsonl was recorded (§6, lever 1), the 8-bit GEMM at batch 1's M (lever 3), then its GPU tests. About 8 minutes.
# From 6e01978 the grid encodes CFG's empty prompt once per run (--null-prompt cached): its Gemma-2 phase drops by
# the 16 x 300 null tokens at batch 16 (a third of the text tokens) against suite-b599089.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 250 python3 -m sana_eval bench suite sana --models Sana-0.6B Sana-1.6B --resolutions 1024 --batch 16 1 \
  --dtype fp16 --quantize none w8a8 fp8 --peer --out $OUT/suite > $OUT/suite.log 2>&1
timeout 30 python3 reports/2026-12-03-07a3872-h200/xattn.py > $OUT/xattn.jsonl 2> $OUT/xattn.err
timeout 90 python3 reports/2026-12-03-07a3872-h200/gemm_small_m.py > $OUT/gemm_small_m.jsonl 2> $OUT/gemm_small_m.err
timeout 200 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/test_quantize.py -k "gpu and (gemm or tma)" \
  > $OUT/gpu-tests-gemm.log 2>&1
tail -n 3 $OUT/suite.log $OUT/gpu-tests-gemm.log
