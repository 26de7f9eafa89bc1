#!/usr/bin/env bash
# The one device run behind this report (H200, torch 2.11, triton 3.6), from the repository root; writes to $OUT.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
R=reports/2026-12-03-b6517e0-h200-quant
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt"
python3 -c 'import json; from sana_eval.provenance import collect; print(json.dumps(collect().to_dict(), indent=1))' \
    > "$OUT/provenance.json" 2>&1
timeout 130 python3 -m pytest -q -p no:cacheprovider tests/test_quantize.py > "$OUT/test.log" 2>&1
echo "pytest rc $?"; tail -4 "$OUT/test.log"
timeout 250 python3 -m sana_eval bench transformer --preset Sana_600M_1024px Sana_1600M_1024px --batch 16 \
    --dtype fp16 --quantize none w8a8 fp8 > "$OUT/quant-bench.jsonl" 2>> "$OUT/errors.log"
echo "bench rc $?"; tail -3 "$OUT/errors.log"
timeout 90 python3 "$R/gemm_timing.py" > "$OUT/gemm.jsonl" 2>> "$OUT/errors.log"
echo "gemm rc $?"; tail -3 "$OUT/errors.log"
timeout 80 python3 -m sana_eval bench e2e --preset Sana_600M_1024px --batch 16 --dtype fp16 --quantize none w8a8 fp8 \
    > "$OUT/quant-e2e.jsonl" 2>> "$OUT/errors.log"
echo "e2e rc $?"; tail -3 "$OUT/errors.log"
python3 - <<'PY'
import json, os
for name in ("quant-bench.jsonl", "gemm.jsonl", "quant-e2e.jsonl"):
    for line in open(os.path.join(os.environ["OUT"], name)):
        row = json.loads(line)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
               if k not in ("gpu", "impl", "resolution", "dtype", "M", "device", "blocks", "vae", "text_encoder")})
PY
