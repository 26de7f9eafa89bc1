# The next device session's first two calls (carry .whl with diffusers 0.42.1 and importlib_metadata):
#   call 1: bash next_run.sh suite   the whole grid in one command, diffusers' denoiser beside ours (~5 min)
#   call 2: bash next_run.sh sweep   the depth-wise kernel's tilings, lever 1 of bench.md §6 (~6 min)
#   call 3: bash next_run.sh gemm    the persistent TMA 8-bit GEMM (gemm_tma.py), lever 2, against ours and cuBLAS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ "$1" = suite ]; then
  timeout 540 python3 -m sana_eval bench suite sana --models Sana-0.6B Sana-1.6B --resolutions 1024 --batch 16 1 \
    --dtype fp16 --quantize none w8a8 fp8 --peer --out $OUT/suite > $OUT/suite.log 2>&1
elif [ "$1" = sweep ]; then
  timeout 540 python3 reports/2026-12-03-943afac-h200-e2e/sweep_dwconv.py > $OUT/sweep_dwconv.jsonl 2> $OUT/sweep_dwconv.err
else
  timeout 540 python3 reports/2026-12-03-943afac-h200-e2e/gemm_tma.py > $OUT/gemm_tma.jsonl 2> $OUT/gemm_tma.err
fi
