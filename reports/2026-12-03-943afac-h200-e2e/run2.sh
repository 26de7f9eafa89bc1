# Device call 2 (H200): the GPU tests that failed in call 1 with their messages, 0.6B at 4K, the diffusers
# denoiser beside ours (the peer), and the kernel timings of micro_next.py. Carry .whl.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=reports/2026-12-03-a56d2cc-h200-fusion
timeout 100 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/test_quantize.py \
  -k "gemm_epilogue or (tensor_cores and w8a8 and triton)" > $OUT/failed-tests.log 2>&1
timeout 100 python3 -m sana_eval bench e2e --preset Sana_600M_1024px --resolution 4096 --batch 1 --dtype fp16 > $OUT/e2e-4k.jsonl 2> $OUT/e2e-4k.err
timeout 200 python3 -m sana_eval bench transformer --preset Sana_600M_1024px Sana_1600M_1024px --impl ours diffusers \
  --batch 16 1 --dtype fp16 > $OUT/peer.jsonl 2> $OUT/peer.err
timeout 130 python3 $R/micro_next.py > $OUT/micro_next.jsonl 2> $OUT/micro_next.err
echo done
