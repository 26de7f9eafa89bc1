"""End-to-end timing of the peer models of paper Tables 7 and 14 (FLUX, SD3, PixArt, Hunyuan-DiT, SDXL, Playground
v2.5, Lumina-Next) with random weights, and `sana-eval bench --suite peers`.

Same clock and phases as the Sana timing (sana_eval/bench/e2e.py, paper §2): text encoding (prompt, and the
negative prompt where the pipeline runs CFG) + each model's default steps on its CFG batch + VAE decoding, medians
after a warm-up. Everything runs in `dtype` (the paper's FP16) unless `vae_dtype` says otherwise; the pipelines
themselves upcast some VAEs to fp32, which the record would name. Steps per peer: peer_models.STEP_CHOICES.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sana_eval.bench.clock import (
    Clock,
    device_name,
    free_memory,
    median_phases,
    peak_memory_gib,
    reset_peak_memory,
    timing_device,
)
from sana_eval.bench.e2e import WARMUP_STEPS, default_decode_chunk
from sana_eval.bench.peer_models import PEERS, STEP_CHOICES, PeerSpec, get_peer
from sana_eval.bench.peer_workload import PeerWorkload
from sana_eval.bench.records import JsonLines, fmt, machine_info, machine_lines, paper_cell, run_case
from sana_eval.io import write_text

BASELINE = "flux-dev"                   # Table 14 (and Table 7 at 1024 px): speedup relative to FLUX-dev
# Row labels of each peer in Table 14 and Table 7.
TABLE14_LABELS = {"sd3-medium": "SD3", "flux-schnell": "FLUX-schnell", "flux-dev": "FLUX-dev",
                  "pixart-sigma": "PixArt-Σ", "hunyuan-dit": "HunyuanDiT"}
TABLE7_LABELS = {"lumina-next": "LUMINA-Next", "sdxl": "SDXL", "playground-v2.5": "PlayGroundv2.5",
                 "hunyuan-dit": "Hunyuan-DiT", "pixart-sigma": "PixArt-Σ", "pixart-alpha": "PixArt-α",
                 "sd3-medium": "SD3-medium", "flux-dev": "FLUX-dev", "flux-schnell": "FLUX-schnell"}


@dataclass(frozen=True)
class PeerE2ESpec:
    """One peer case: the model, the images, and how long to time it."""

    peer: str | PeerSpec                # a PEERS key, paper row label or repo id, or a spec
    resolution: int
    batch: int
    dtype: str = "fp16"
    steps: int | None = None            # None: the peer's own (peer_models.STEP_CHOICES)
    device: str | torch.device = "cuda"
    vae_dtype: str | None = None        # None: `dtype`
    # Fewer than `steps` runs only that many denoiser forwards per timed generation and scales the denoising time
    # to `steps` (every step is the same forward): batch-16 throughput of FLUX-dev fits in a GPU budget this way.
    timed_steps: int | None = None
    decode_chunk: int | None = None     # images per VAE call; None: e2e.default_decode_chunk
    repeats: int = 2
    budget_s: float | None = 60.0       # timed runs stop after this many seconds (at least one)
    tiny: bool = False                  # the peer shrunk to a few thousand parameters (CPU tests)


@dataclass(frozen=True)
class PeerTiming:
    name: str
    repo: str
    resolution: int
    batch: int
    rows: int                           # 2·batch with CFG
    steps: int
    timed_steps: int                    # forwards actually run per timed generation (denoise_s scaled to `steps`)
    cfg: bool
    guidance_embed: bool
    dtype: str
    vae_dtype: str
    text_encoders: str                  # "key:tokens" each
    params: int                         # denoiser
    decode_chunk: int
    text_s: float
    denoise_s: float
    decode_s: float
    total_s: float                      # the latency at batch 1
    step_s: float
    img_per_s: float                    # the throughput at batch 16
    denoise_img_per_s: float
    peak_mem_gib: float | None
    build_s: float                      # random init of denoiser + VAE (+ text encoders on first use)
    repeats: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def time_peer(case: PeerE2ESpec) -> PeerTiming:
    """Time one peer generating `case.batch` images at `case.resolution` px."""
    spec = get_peer(case.peer, tiny=case.tiny)
    steps = case.steps or spec.steps
    timed = min(case.timed_steps or steps, steps)
    dev = timing_device(case.device)
    dtype, vae_dtype = case.dtype, case.vae_dtype or case.dtype
    resolution, batch = case.resolution, case.batch
    chunk = case.decode_chunk or default_decode_chunk(resolution)
    build = Clock(dev)
    build.mark()
    work = PeerWorkload(spec, resolution, batch, dtype=dtype, vae_dtype=vae_dtype, device=dev)
    try:
        build.mark()
        build_s = build.intervals()[0]
        params = sum(p.numel() for p in work.denoiser.parameters())
        reset_peak_memory(dev)
        times = median_phases(lambda clock: work(clock, timed, chunk), dev, case.repeats,
                              warmup=lambda: work(Clock(dev), min(timed, WARMUP_STEPS), chunk),
                              budget_s=case.budget_s)
    finally:
        work = None                     # drop the denoiser and VAE before the next peer is built
        free_memory(dev)
    text_s, measured, decode_s = times.phases
    denoise_s = measured * steps / timed
    total_s = times.total + denoise_s - measured
    return PeerTiming(
        name=spec.name, repo=spec.repo, resolution=resolution, batch=batch, rows=2 * batch if spec.cfg else batch,
        steps=steps, timed_steps=timed, cfg=spec.cfg, guidance_embed=spec.guidance_embed, dtype=dtype,
        vae_dtype=vae_dtype, text_encoders=" + ".join(f"{k}:{n}" for k, n in spec.texts), params=params,
        decode_chunk=chunk, text_s=text_s, denoise_s=denoise_s, decode_s=decode_s, total_s=total_s,
        step_s=denoise_s / steps, img_per_s=batch / total_s, denoise_img_per_s=batch / denoise_s,
        peak_mem_gib=peak_memory_gib(dev), build_s=build_s, repeats=times.repeats, device=device_name(dev))


def paper_peer(name: str, resolution: int) -> dict[str, str]:
    """The paper's speedup / throughput / latency of a peer: Table 14 where it has the row, else Table 7."""
    group = f"{resolution} x {resolution}"
    for table_id, labels in (("table14", TABLE14_LABELS), ("table7", TABLE7_LABELS)):
        if name in labels:
            values = {k: paper_cell(table_id, f"{group} / {labels[name]}", k)
                      for k in ("speedup", "throughput", "latency")}
            if any(values.values()):
                return {"table": table_id, **{k: v for k, v in values.items() if v}}
    return {}


def run_peer_suite(out_dir: str | Path, names: Sequence[str] = tuple(PEERS), resolutions: Iterable[int] = (512, 1024),
                   batches: Iterable[int] = (1,), dtype: str = "fp16", *, device: str = "cuda",
                   **timing: object) -> Path:
    """Time every (peer, resolution, batch); write peers.jsonl and peers.md in `out_dir`; return the .md path.

    Each record carries the machine (records.machine_info) and the paper's cells; the Markdown adds the
    speedup over FLUX-dev (throughput ratio at the same resolution and batch) when FLUX-dev is in the run.
    `timing` are the other PeerE2ESpec fields of every case (steps, timed_steps, vae_dtype, repeats, budget_s, tiny).
    """
    out = Path(out_dir)
    lines = JsonLines(out / "peers.jsonl")
    for name in names:
        spec = get_peer(name)
        for resolution in resolutions:
            for batch in batches:
                case = PeerE2ESpec(spec, resolution, batch, dtype, device=device, **timing)
                record = run_case(lambda case=case: time_peer(case))
                lines.add({"case": "peer_e2e", "model": spec.name, "resolution": resolution, "batch": batch,
                           **record, "steps_choice": STEP_CHOICES[spec.name],
                           "paper": paper_peer(spec.name, resolution), "machine": machine_info()})
    return write_text(out / "peers.md", peer_markdown(lines.records, dtype))


def speedups(records: list[dict]) -> dict[int, float]:
    """Record index -> throughput over FLUX-dev's at the same resolution and batch (paper Table 14 "Speedup")."""
    base = {(r["resolution"], r["batch"]): r["img_per_s"] for r in records
            if r["model"] == BASELINE and "error" not in r}
    return {i: r["img_per_s"] / base[r["resolution"], r["batch"]] for i, r in enumerate(records)
            if "error" not in r and (r["resolution"], r["batch"]) in base}


def peer_markdown(records: list[dict], dtype: str) -> str:
    ratio = speedups(records)
    head = ["# Peer models end to end (random weights; diffusers implementations)", ""]
    if records:
        head += machine_lines(records[0])
    head += ["", f"Total = text encoders + the model's default steps (CFG: 2·batch rows) + VAE decode, {dtype}. "
             "Speedup = img/s over FLUX-dev's at the same px and batch. Paper: Table 14 (Table 7 where Table 14 "
             "lacks the row); its throughput is at batch 16, latency at batch 1.", "",
             "| Model | px | Batch | Steps | CFG | Text s | Denoise s | Decode s | Total s | img/s | Speedup | "
             "Mem GiB | Paper speedup | Paper img/s | Paper latency s |", "|" + "---|" * 15]
    for i, r in enumerate(records):
        paper = r["paper"]
        tail = f" {paper.get('speedup', '-')} | {paper.get('throughput', '-')} | {paper.get('latency', '-')} |"
        if "error" in r:
            head.append(f"| {r['model']} | {r['resolution']} | {r['batch']} | {r['error']} |" + " |" * 8 + tail)
            continue
        speedup = f"{ratio[i]:.1f}" if i in ratio else "-"
        head.append(f"| {r['model']} | {r['resolution']} | {r['batch']} | {r['steps']} | {'x2' if r['cfg'] else '-'} | "
                    f"{fmt(r['text_s'])} | {fmt(r['denoise_s'])} | {fmt(r['decode_s'])} | {fmt(r['total_s'])} | "
                    f"{fmt(r['img_per_s'])} | {speedup} | {fmt(r['peak_mem_gib'], 1)} |" + tail)
    head += ["", "Steps per model: " + "; ".join(f"{k} {v}" for k, v in STEP_CHOICES.items())]
    return "\n".join(head) + "\n"
