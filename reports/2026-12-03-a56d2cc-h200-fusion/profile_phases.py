"""Scratch: where the time goes (not committed)."""
import sys, time, json
import torch
from torch.profiler import profile, ProfilerActivity
from sana_eval.bench.e2e import E2ESpec, SanaWorkload
from sana_eval.bench.clock import Clock

def top(prof, n=22):
    ka = prof.key_averages()
    rows = sorted(ka, key=lambda e: -e.self_device_time_total)
    tot = sum(e.self_device_time_total for e in ka)
    print(f"  total device {tot/1e3:.2f} ms")
    for e in rows[:n]:
        print(f"  {e.self_device_time_total/1e3:9.3f} ms {e.count:6d}x  {e.key[:110]}")

def timed(fn, reps=5):
    fn(); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps): fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps

for preset, batch, quant in [("Sana_600M_1024px", 16, "none"), ("Sana_600M_1024px", 1, "none"), ("Sana_600M_1024px", 16, "w8a8")]:
    w = SanaWorkload(E2ESpec(preset=preset, resolution=1024, batch=batch, dtype="fp16", quantize=quant))
    w(Clock(w.device), 2)
    emb_ids = w.prompt_ids
    x = w.noise.to(torch.float16).repeat(2, 1, 1, 1)
    with torch.no_grad():
        e, m = w._encode(*w.prompt_ids)
        n, nm = w._encode(*w.null_ids)
        emb = torch.cat([n, e]).half(); mask = torch.cat([nm, m])
        t = torch.full((x.shape[0],), 500.0, device="cuda")
        den = w.graphed or w.transformer
        print(f"== {preset} b{batch} {quant}: text {timed(lambda: w._encode(*w.prompt_ids))*1e3:.1f} ms,"
              f" fwd {timed(lambda: den(x, t, emb, mask))*1e3:.2f} ms,"
              f" decode {timed(lambda: w._decode(w.noise.half()), 3)*1e3:.1f} ms")
        if quant == "none":
            with profile(activities=[ProfilerActivity.CUDA]) as p:
                w._encode(*w.prompt_ids); torch.cuda.synchronize()
            print(" -- text"); top(p, 12)
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            w.transformer(x, t, emb, mask); torch.cuda.synchronize()
        print(" -- dit forward"); top(p)
        if quant == "none":
            with profile(activities=[ProfilerActivity.CUDA]) as p:
                w._decode(w.noise.half()); torch.cuda.synchronize()
            print(" -- decode"); top(p)
    del w; torch.cuda.empty_cache()
