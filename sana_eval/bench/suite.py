"""`sana-eval bench --suite`: the Sana speed grid of paper Table 14 (and Table 7's 512/1024 px cells) and the
text encoders of Table 13, written as JSON lines, a Markdown table and a time-breakdown plot.

Every record carries the machine it ran on (GPU, driver, clocks, torch/CUDA) and the paper value it is set
against; the paper timed an A100 in FP16, so on other GPUs the comparison is of hardware as much as of code.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path

from model.config import TransformerConfig
from model.quantize import check_mode
from sana_eval.bench import e2e
from sana_eval.bench.clock import measure_matmul_peak
from sana_eval.bench.records import JsonLines, fmt, machine_info, machine_lines, paper_cell, run_case
from sana_eval.bench.text_encoders import (
    TEXT_ENCODERS,
    TextEncoderSpec,
    count_text_encoder_parameters,
    text_encoder_name,
    time_text_encoder,
)
from sana_eval.bench.transformer import time_transformer
from sana_eval.io import save_figure, write_text
from sana_eval.tables.speed import PRESETS

MODELS = ("Sana-0.6B", "Sana-1.6B")
RESOLUTIONS = (512, 1024, 2048, 4096)
BATCHES = (1, 16)                          # latency at batch 1, throughput at batch 16 (Table 7 caption)
# Table 13 row label of each TEXT_ENCODERS key.
TABLE13_LABELS = {"t5-xxl": "T5-XXL", "t5-xl": "T5-XL", "t5-large": "T5-large", "t5-base": "T5-base",
                  "t5-small": "T5-small", "gemma-2b": "Gemma-2b", "gemma-2-2b": "Gemma-2-2b"}


def _paper_speed(model: str, resolution: int, batch: int) -> tuple[str, str | None]:
    """The Table 14 cell a case is set against: latency (s) at batch 1, throughput (/s) at batch 16."""
    column = {1: "latency", 16: "throughput"}.get(batch)
    if column is None:
        return "", None
    return column, paper_cell("table14", f"{resolution} x {resolution} / {model}", column)


def run_speed_suite(out_dir: str | Path, models: Sequence[str] = MODELS, resolutions: Iterable[int] = RESOLUTIONS,
                    batches: Iterable[int] = BATCHES, dtype: str = "fp16", *, steps: int = 20,
                    device: str = "cuda", presets: Mapping[tuple[str, int], str | TransformerConfig] | None = None,
                    matmul_n: int = 8192, quantize: Sequence[str] = ("none",), peer: bool = False,
                    **options: object) -> Path:
    """Time every (model, resolution, batch) end to end, once per `quantize` mode, and with `peer` diffusers'
    denoiser beside it in the same run; write speed.jsonl, speed.md and speed.png in `out_dir`.

    `presets` maps (model, resolution) to a preset (default: Table 14's, sana_eval/tables/speed.py); `options` are
    the other E2ESpec fields of every case (text_dtype, vae_dtype, chi_tokens, repeats, ...). Returns the Markdown
    path.
    """
    presets = PRESETS if presets is None else presets
    for mode in quantize:
        check_mode(mode)
    if peer and importlib.util.find_spec("diffusers") is None:
        raise ValueError("the peer's denoiser needs diffusers: pip install diffusers")
    out = Path(out_dir)
    peak = measure_matmul_peak(dtype, n=matmul_n, device=device)
    lines = JsonLines(out / "speed.jsonl")
    for model in models:
        for resolution in resolutions:
            if (model, resolution) not in presets:
                raise ValueError(f"no preset for {model} at {resolution} px; known: {sorted(presets)}")
            preset = presets[model, resolution]
            for batch in batches:
                column, paper = _paper_speed(model, resolution, batch)
                for mode in quantize:
                    spec = e2e.E2ESpec(preset, resolution, batch, dtype, steps, device=device, quantize=mode,
                                       **options)
                    record = run_case(lambda spec=spec: e2e.time_sana_e2e(spec, matmul_peak_tflops=peak))
                    lines.add({"case": "sana_e2e", "model": model, "resolution": resolution, "batch": batch,
                               **record, "paper_table14": {column: paper} if column else {},
                               "machine": machine_info()})
                if peer:  # as many repeats as each end-to-end case
                    record = run_case(partial(time_transformer, preset, resolution, batch, dtype, impl="diffusers",
                                              steps=steps, repeats=spec.repeats, device=device))
                    lines.add({"case": "peer_denoiser", "model": model, "resolution": resolution, "batch": batch,
                               **record, "machine": machine_info()})
    md = write_text(out / "speed.md", speed_markdown(lines.records, peak, dtype, matmul_n))
    plot_breakdown([r for r in lines.records if r["case"] == "sana_e2e" and r.get("quantize", "none") == "none"],
                   out / "speed.png")
    return md


def speed_markdown(records: list[dict], matmul_peak: float, dtype: str, matmul_n: int = 8192) -> str:
    """The end-to-end table; with quantised rows, each one's step against the unquantised row's; with the peer's
    rows, a second table of the two denoisers (20 steps each, the same run)."""
    ours = [r for r in records if r["case"] == "sana_e2e"]
    head = ["# Sana end-to-end speed (random weights)", ""]
    if records:
        head += machine_lines(records[0])
    head += [f"- {dtype} matmul peak ({matmul_n}³ GEMM, what % peak divides by): {matmul_peak:.1f} TFLOP/s", "",
             f"Total = Gemma-2 text encoding + {ours[0].get('steps', '?') if ours else '?'} denoising steps "
             "(CFG: 2·batch rows) + DC-AE decoding; img/s = batch / total; × fp16 step: the unquantised step "
             "over this row's. Paper: Table 14 latency (batch 1) or throughput (batch 16).", "",
             "| Model | Preset | Kernels | Graphs | Quantize | px | Batch | Text s | Denoise s | Decode s | Total s | "
             "img/s | Step ms | × fp16 step | TFLOP/s | % peak | Mem GiB | Paper |", "|" + "---|" * 18]
    unquantised = {_cell(r): r for r in ours if r.get("quantize", "none") == "none" and "error" not in r}
    for r in ours:
        paper = ", ".join(f"{k} {v}" for k, v in r["paper_table14"].items() if v) or "-"
        if "error" in r:
            head.append(f"| {r['model']} | | | | | {r['resolution']} | {r['batch']} | {r['error']} |" + " |" * 10
                        + f" {paper} |")
            continue
        mfu = f"{100 * r['mfu']:.0f}" if r["mfu"] is not None else "-"
        graphs = {True: "yes", False: "no"}.get(r.get("cuda_graphs"), "-")  # "-": records from before the field
        base = unquantised.get(_cell(r))
        gain = f"{base['step_s'] / r['step_s']:.2f}" if base else "-"
        head.append(f"| {r['model']} | {r['preset']} | {r['kernels']} | {graphs} | {r.get('quantize', 'none')} | "
                    f"{r['resolution']} | {r['batch']} | {fmt(r['text_s'])} | "
                    f"{fmt(r['denoise_s'])} | {fmt(r['decode_s'])} | {fmt(r['total_s'])} | "
                    f"{fmt(r['img_per_s'])} | {1000 * r['step_s']:.1f} | {gain} | {fmt(r['achieved_tflops'], 1)} | "
                    f"{mfu} | {fmt(r['peak_mem_gib'], 1)} | {paper} |")
    peers = [r for r in records if r["case"] == "peer_denoiser"]
    if peers:
        head += ["", "Denoisers, 20 steps with CFG in the same run: ours (the unquantised end-to-end row's denoise "
                 "phase) against diffusers' SanaTransformer2DModel of the same architecture.", "",
                 "| Model | px | Batch | ours s | diffusers s | ours × faster |", "|" + "---|" * 6]
        for r in peers:
            base = unquantised.get(_cell(r))
            theirs = "-" if "error" in r else fmt(r["denoise20_s"])
            ratio = f"{r['denoise20_s'] / base['denoise_s']:.2f}" if base and "error" not in r else r.get("error", "-")
            head.append(f"| {r['model']} | {r['resolution']} | {r['batch']} | "
                        f"{fmt(base['denoise_s']) if base else '-'} | {theirs} | {ratio} |")
    return "\n".join(head) + "\n"


def _cell(record: dict) -> tuple:
    return record["model"], record["resolution"], record["batch"]


def plot_breakdown(records: list[dict], path: Path) -> None:
    """Stacked text / denoise / decode seconds per resolution, one bar per model, one panel per batch."""
    from matplotlib.figure import Figure  # heavy, optional: only the plot needs matplotlib

    ok = [r for r in records if "error" not in r]
    batches = sorted({r["batch"] for r in ok}) or [1]
    models = list(dict.fromkeys(r["model"] for r in ok))
    fig = Figure(figsize=(6 * len(batches), 4))
    axes = fig.subplots(1, len(batches), squeeze=False)
    width = 0.8 / max(1, len(models))
    for ax, batch in zip(axes[0], batches):
        resolutions = sorted({r["resolution"] for r in ok if r["batch"] == batch})
        for m, model in enumerate(models):
            rows = {r["resolution"]: r for r in ok if r["batch"] == batch and r["model"] == model}
            xs = [i + m * width for i, res in enumerate(resolutions) if res in rows]
            bottom = [0.0] * len(xs)
            for phase, color in (("text_s", "tab:green"), ("denoise_s", "tab:blue"), ("decode_s", "tab:orange")):
                heights = [rows[res][phase] for res in resolutions if res in rows]
                ax.bar(xs, heights, width, bottom=bottom, color=color, edgecolor="black", linewidth=0.3,
                       label=phase[:-2] if m == 0 else None)
                bottom = [b + h for b, h in zip(bottom, heights)]
            for x, total in zip(xs, bottom):
                ax.text(x, total, f"{model.removeprefix('Sana-')}\n{total:.2g} s", ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(resolutions))], [f"{r}px" for r in resolutions])
        ax.set_ylabel("seconds")
        ax.set_title(f"batch {batch}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run_text_encoder_suite(out_dir: str | Path, names: Iterable[str | TextEncoderSpec] = tuple(TEXT_ENCODERS),
                           batch: int = 32, seq: int = 300, dtype: str = "fp16", *, device: str = "cuda",
                           repeats: int = 5) -> Path:
    """Table 13: latency and parameters of each encoder; writes text_encoders.jsonl and .md, returns the .md."""
    out = Path(out_dir)
    lines = JsonLines(out / "text_encoders.jsonl")
    for name in names:
        key = text_encoder_name(name) if isinstance(name, str) else name.repo
        record = run_case(lambda name=name: time_text_encoder(name, batch, seq, dtype, repeats=repeats, device=device))
        label = TABLE13_LABELS.get(key)
        paper = {k: paper_cell("table13", label, k) for k in ("latency", "params")} if label else {}
        lines.add({"case": "text_encoder", "name": key, "params": count_text_encoder_parameters(name), **record,
                   "paper_table13": paper, "machine": machine_info()})
    rows = [f"| {r['name']} | {r['params'] / 1e6:.1f} | {r['paper_table13'].get('params', '-')} | "
            f"{r.get('error') or fmt(r['latency_s'])} | {r['paper_table13'].get('latency', '-')} | "
            f"{r.get('attn_implementation', '-')} | {fmt(r.get('peak_mem_gib'), 1)} |" for r in lines.records]
    text = "\n".join(["# Text-encoder latency (Table 13: batch 32, 300 tokens, FP16; random weights)", "",
                      *(machine_lines(lines.records[0]) if lines.records else []), "",
                      "| Encoder | Params (M) | Paper (M) | Latency s | Paper s | Attention | Mem GiB |",
                      "|---|---|---|---|---|---|---|", *rows]) + "\n"
    return write_text(out / "text_encoders.md", text)
