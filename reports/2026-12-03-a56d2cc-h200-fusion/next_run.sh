# What the next device session runs first (this one's budget was spent before it could): the end-to-end grid with
# all of this session's changes, the component timings, and the GPU tests of the changed paths. Carry .whl.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
python -m sana_eval bench e2e --preset Sana_600M_1024px Sana_1600M_1024px --batch 16 1 --dtype fp16 --quantize none w8a8 fp8
python -m sana_eval bench e2e --preset Sana_600M_1024px --resolution 4096 --batch 1 --dtype fp16
python reports/2026-12-03-a56d2cc-h200-fusion/micro_next.py
python -m pytest -q -p no:cacheprovider tests/test_quantize.py tests/test_kernels.py tests/test_cuda_graph.py tests/test_text_encoder.py -k "gpu or graph or masks or sliding or fused or quantis or w8a8 or fp8"
