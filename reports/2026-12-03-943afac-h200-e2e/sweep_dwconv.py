"""For the next device session: the depth-wise GLU kernel (model/kernels/mix_ffn.py) over tilings, with and without
the SiLU on its loads, on the DiT's shapes; its tiling was chosen when every input still took a SiLU. Prints one
JSON line per (shape, activated) with the committed tiling's time, the best tiling and the bandwidth reached."""
import itertools, json, torch, triton
from model.kernels import mix_ffn
ms = lambda f: triton.testing.do_bench(f, warmup=10, rep=50)
SHAPES = {"0.6B b16": (32, 32, 32, 2880), "1.6B b16": (32, 32, 32, 5600), "0.6B b1": (2, 32, 32, 2880),
          "0.6B 4K b1": (2, 128, 128, 2880)}
for (name, (B, H, W, F)), activated in itertools.product(SHAPES.items(), (True, False)):
    x = torch.randn(B, H * W, 2 * F, device="cuda", dtype=torch.float16)
    w = torch.randn(2 * F, 1, 3, 3, device="cuda", dtype=torch.float16); b = torch.randn(2 * F, device="cuda", dtype=torch.float16)
    ref = mix_ffn.dwconv_glu(x, w, b, (H, W), activated=activated)
    times = {}
    for bw, bc, rows, warps in itertools.product((16, 32, 64), (32, 64, 128), (8, 16, 32), (4, 8)):
        if bw * bc > 4096:
            continue
        out = torch.empty_like(ref)
        row_blocks = triton.cdiv(H, rows)
        grid = (triton.cdiv(W, bw), triton.cdiv(F, bc), B * row_blocks)
        run = lambda: mix_ffn._dwconv_glu_kernel[grid](x, w, b, out, H, W, F, row_blocks, BLOCK_W=bw, BLOCK_C=bc,
                                                      ROWS=rows, ACTIVATED=activated, num_warps=warps)
        try:
            run()
            assert torch.equal(out, ref), "tiling changes the result"
            times[f"{bw}x{bc}x{rows}/w{warps}"] = ms(run)
        except Exception as err:  # noqa: BLE001 (out of resources for a large tile: record and go on)
            times[f"{bw}x{bc}x{rows}/w{warps}"] = repr(err)[:80]
    ok = {k: v for k, v in times.items() if isinstance(v, float)}
    best = min(ok, key=ok.get)
    committed = f"{mix_ffn.BLOCK_W}x{mix_ffn.BLOCK_C}x{mix_ffn.ROWS}/w{mix_ffn.NUM_WARPS}"
    gb = B * H * W * 3 * F * 2 / 1e9
    print(json.dumps({"shape": name, "activated": activated, "committed": committed, "committed_ms": ok.get(committed),
                      "best": best, "best_ms": ok[best], "best_TBps": round(gb / ok[best], 2),
                      "floor_ms_at_4.8TBps": round(gb / 4.8, 4), "all": times}), flush=True)
