"""The depth-wise GLU kernel (model/kernels/mix_ffn.py) over tilings and software-pipelining depths, with and
without the SiLU on its loads, on the DiT's shapes (its tiling was chosen when every input still took a SiLU).
One JSON line per (shape, activated): the committed setting's time, the best one and the bandwidth it reaches.
`python sweep_dwconv.py quick`: a dozen settings on the two batch-16 shapes (about a minute on an H200); its run
before the retuning is `sweep_dwconv_quick.jsonl` ("committed" there: 32x32x16/w4/s1 for every shape)."""
import itertools, json, sys, torch, triton
from model.kernels import mix_ffn
ms = lambda f: triton.testing.do_bench(f, warmup=10, rep=50)
QUICK = len(sys.argv) > 1 and sys.argv[1] == "quick"
SHAPES = {"0.6B b16": (32, 32, 32, 2880), "1.6B b16": (32, 32, 32, 5600), "0.6B b1": (2, 32, 32, 2880),
          "0.6B 4K b1": (2, 128, 128, 2880)}
if QUICK:
    SHAPES = {k: SHAPES[k] for k in ("0.6B b16", "1.6B b16")}
    SETTINGS = [(32, 32, 16, 4, s) for s in (1, 2, 3)] + [(32, 32, 8, 4, s) for s in (1, 2)] + \
               [(32, 32, 32, 4, s) for s in (1, 2)] + [(32, 64, 16, w, s) for w in (4, 8) for s in (1, 2)] + \
               [(16, 64, 16, 4, 1), (64, 32, 16, 4, 1)]
else:
    # 8 warps and a 2-deep pipeline lost on every shape of the quick run
    SETTINGS = [c for c in itertools.product((16, 32, 64), (16, 32, 64, 128), (4, 8, 16, 32), (4,), (1, 3))
                if c[0] * c[1] <= 4096]   # small tiles and row blocks for batch 1's grid of 360 programs
for (name, (B, H, W, F)), activated in itertools.product(SHAPES.items(), (True, False)):
    x = torch.randn(B, H * W, 2 * F, device="cuda", dtype=torch.float16)
    w = torch.randn(2 * F, 1, 3, 3, device="cuda", dtype=torch.float16); b = torch.randn(2 * F, device="cuda", dtype=torch.float16)
    ref = mix_ffn.dwconv_glu(x, w, b, (H, W), activated=activated)
    times = {}
    for bw, bc, rows, warps, stages in SETTINGS:
        out = torch.empty_like(ref)
        row_blocks = triton.cdiv(H, rows)
        grid = (triton.cdiv(W, bw), triton.cdiv(F, bc), B * row_blocks)
        run = lambda: mix_ffn._dwconv_glu_kernel[grid](x, w, b, out, H, W, F, row_blocks, BLOCK_W=bw, BLOCK_C=bc,
                                                      ROWS=rows, ACTIVATED=activated, STAGES=stages, num_warps=warps)
        key = f"{bw}x{bc}x{rows}/w{warps}/s{stages}"
        try:
            run()
            assert torch.equal(out, ref), "the setting changes the result"
            times[key] = round(ms(run), 4)
        except Exception as err:  # noqa: BLE001 (out of resources for a large tile: record and go on)
            times[key] = repr(err)[:80]
    ok = {k: v for k, v in times.items() if isinstance(v, float)}
    best = min(ok, key=ok.get)
    programs = triton.cdiv(W, mix_ffn.BLOCK_W) * triton.cdiv(F, mix_ffn.BLOCK_C) * B * triton.cdiv(H, mix_ffn.ROWS)
    block_c, stages = mix_ffn.tiling(programs, activated)   # the setting dwconv_glu takes
    committed = f"{mix_ffn.BLOCK_W}x{block_c}x{mix_ffn.ROWS}/w{mix_ffn.NUM_WARPS}/s{stages}"
    gb = B * H * W * 3 * F * 2 / 1e9
    print(json.dumps({"shape": name, "activated": activated, "committed": committed, "committed_ms": ok.get(committed),
                      "best": best, "best_ms": ok[best], "best_TBps": round(gb / ok[best], 2),
                      "floor_ms_at_4.8TBps": round(gb / 4.8, 4), "all": times}), flush=True)
