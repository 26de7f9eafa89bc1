# Device call 1 (H200): the GPU tests of last session's uncompiled paths, then the end-to-end grid with the
# quantised modes. Outputs land in $OUT. Carry .whl (diffusers 0.42.1 for the peer in run2.sh).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv > $OUT/gpu.txt
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" >> $OUT/gpu.txt
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_quantize.py tests/test_kernels.py tests/test_cuda_graph.py tests/test_text_encoder.py \
  -k "gpu or graph or fused or fp8 or w8a8" > $OUT/gpu-tests.log 2>&1
timeout 360 python3 -m sana_eval bench e2e --preset Sana_600M_1024px Sana_1600M_1024px --batch 16 1 --dtype fp16 \
  --quantize none w8a8 fp8 > $OUT/e2e.jsonl 2> $OUT/e2e.err
echo done
