"""`sana-eval bench --suite`: the Sana speed grid of paper Table 14 (and Table 7's 512/1024 px cells) and the
text encoders of Table 13, written as JSON lines, a Markdown table and a time-breakdown plot.

Every record carries the machine it ran on (GPU, driver, clocks, torch/CUDA) and the paper value it is set
against; the paper timed an A100 in FP16, so on other GPUs the comparison is of hardware as much as of code.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch

from model.config import TransformerConfig
from model.weights_io import atomic_path
from sana_eval.bench.clock import measure_matmul_peak
from sana_eval.bench.e2e import time_sana_e2e
from sana_eval.bench.text_encoders import (TEXT_ENCODERS, TextEncoderSpec, count_text_encoder_parameters, text_encoder_name,
                                  time_text_encoder)
from sana_eval.provenance import git_state
from sana_eval.tables import get_table
from sana_eval.tables.speed import PRESETS

MODELS = ("Sana-0.6B", "Sana-1.6B")
RESOLUTIONS = (512, 1024, 2048, 4096)
BATCHES = (1, 16)                          # latency at batch 1, throughput at batch 16 (Table 7 caption)
PAPER_GPU = "A100"
_SMI_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
               "power.limit", "temperature.gpu", "persistence_mode")
# Table 13 row label of each TEXT_ENCODERS key.
TABLE13_LABELS = {"t5-xxl": "T5-XXL", "t5-xl": "T5-XL", "t5-large": "T5-large", "t5-base": "T5-base",
                  "t5-small": "T5-small", "gemma-2b": "Gemma-2b", "gemma-2-2b": "Gemma-2-2b"}


def nvidia_smi() -> dict[str, str]:
    """GPU 0's name, driver, current and maximum clocks (MHz), power limit and temperature; {} without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    if not lines:
        return {}
    return dict(zip(_SMI_FIELDS, (v.strip() for v in lines[0].split(","))))


def machine_info() -> dict:
    """What a timing depends on besides the code: GPU, driver, clocks now, torch and CUDA, git commit."""
    commit, dirty = git_state()
    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name() if cuda else "cpu", "nvidia_smi": nvidia_smi() if cuda else {},
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "git_commit": commit, "git_dirty": dirty,
            "paper_gpu": PAPER_GPU}


def _paper(table_id: str, row: str, column: str) -> str | None:
    for r in get_table(table_id).rows:
        if r.id == row:
            return r.cells[column].paper.text
    return None


def _paper_speed(model: str, resolution: int, batch: int) -> tuple[str, str | None]:
    """The Table 14 cell a case is set against: latency (s) at batch 1, throughput (/s) at batch 16."""
    column = {1: "latency", 16: "throughput"}.get(batch)
    if column is None:
        return "", None
    return column, _paper("table14", f"{resolution} x {resolution} / {model}", column)


class _JsonLines:
    """Records rewritten atomically after each case, so an interrupted suite keeps what it measured."""

    def __init__(self, path: Path) -> None:
        self.path, self.records = path, []

    def add(self, record: dict) -> None:
        self.records.append(record)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))


def _run_case(measure: Callable[[], object]) -> dict:
    """One case's record; an error (often out of memory at 4K x 16) becomes the record instead of the end."""
    try:
        return measure().to_dict()
    except (RuntimeError, ValueError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}


def run_speed_suite(out_dir: str | Path, models: Sequence[str] = MODELS, resolutions: Iterable[int] = RESOLUTIONS,
                    batches: Iterable[int] = BATCHES, dtype: str = "fp16", *, steps: int = 20,
                    device: str = "cuda", presets: Mapping[tuple[str, int], str | TransformerConfig] | None = None,
                    matmul_n: int = 8192, **e2e: object) -> Path:
    """Time every (model, resolution, batch) end to end; write speed.jsonl, speed.md and speed.png in `out_dir`.

    `presets` maps (model, resolution) to a preset (default: Table 14's, sana_eval/tables/speed.py); `e2e` goes
    to time_sana_e2e (text_dtype, vae_dtype, chi_tokens, repeats, ...). Returns the Markdown path.
    """
    presets = PRESETS if presets is None else presets
    out = Path(out_dir)
    peak = measure_matmul_peak(dtype, n=matmul_n, device=device)
    lines = _JsonLines(out / "speed.jsonl")
    for model in models:
        for resolution in resolutions:
            if (model, resolution) not in presets:
                raise ValueError(f"no preset for {model} at {resolution} px; known: {sorted(presets)}")
            preset = presets[model, resolution]
            for batch in batches:
                record = _run_case(lambda: time_sana_e2e(preset, resolution, batch, dtype, steps, device=device,
                                                         matmul_peak_tflops=peak, **e2e))
                column, paper = _paper_speed(model, resolution, batch)
                lines.add({"case": "sana_e2e", "model": model, "resolution": resolution, "batch": batch,
                           **record, "paper_table14": {column: paper} if column else {},
                           "machine": machine_info()})
    md = out / "speed.md"
    with atomic_path(md) as tmp:
        tmp.write_text(speed_markdown(lines.records, peak, dtype, matmul_n))
    plot_breakdown(lines.records, out / "speed.png")
    return md


def _fmt(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _machine_lines(record: dict) -> list[str]:
    machine, smi = record["machine"], record["machine"]["nvidia_smi"]
    clocks = (f"; SM {smi.get('clocks.sm')}/{smi.get('clocks.max.sm')} MHz, memory {smi.get('clocks.mem')}/"
              f"{smi.get('clocks.max.mem')} MHz, power limit {smi.get('power.limit')} W") if smi else ""
    return [f"- GPU: {machine['gpu']}; driver {smi.get('driver_version', '-')}{clocks}",
            f"- torch {machine['torch']}, CUDA {machine['cuda']}, cuDNN {machine['cudnn']}; git "
            f"{(machine['git_commit'] or '')[:8] or 'no commit'}{' (dirty)' if machine['git_dirty'] else ''}",
            f"- The paper timed an {PAPER_GPU} in FP16: on another GPU, compare ratios, not absolute times."]


def speed_markdown(records: list[dict], matmul_peak: float, dtype: str, matmul_n: int = 8192) -> str:
    head = ["# Sana end-to-end speed (random weights)", ""]
    if records:
        head += _machine_lines(records[0])
    head += [f"- {dtype} matmul peak ({matmul_n}³ GEMM, what % peak divides by): {matmul_peak:.1f} TFLOP/s", "",
             f"Total = Gemma-2 text encoding + {records[0].get('steps', '?') if records else '?'} denoising steps "
             "(CFG: 2·batch rows) + DC-AE decoding; img/s = "
             "batch / total. Paper: Table 14 latency (batch 1) or throughput (batch 16).", "",
             "| Model | Preset | Kernels | Graphs | px | Batch | Text s | Denoise s | Decode s | Total s | img/s | "
             "Step ms | TFLOP/s | % peak | Mem GiB | Paper |", "|" + "---|" * 16]
    for r in records:
        paper = ", ".join(f"{k} {v}" for k, v in r["paper_table14"].items() if v) or "-"
        if "error" in r:
            head.append(f"| {r['model']} | | | | {r['resolution']} | {r['batch']} | {r['error']} |" + " |" * 9
                        + f" {paper} |")
            continue
        mfu = f"{100 * r['mfu']:.0f}" if r["mfu"] is not None else "-"
        graphs = {True: "yes", False: "no"}.get(r.get("cuda_graphs"), "-")  # "-": records from before the field
        head.append(f"| {r['model']} | {r['preset']} | {r['kernels']} | {graphs} | {r['resolution']} | {r['batch']} | "
                    f"{_fmt(r['text_s'])} | "
                    f"{_fmt(r['denoise_s'])} | {_fmt(r['decode_s'])} | {_fmt(r['total_s'])} | "
                    f"{_fmt(r['img_per_s'])} | {1000 * r['step_s']:.1f} | {_fmt(r['achieved_tflops'], 1)} | "
                    f"{mfu} | {_fmt(r['peak_mem_gib'], 1)} | {paper} |")
    return "\n".join(head) + "\n"


def plot_breakdown(records: list[dict], path: Path) -> None:
    """Stacked text / denoise / decode seconds per resolution, one bar per model, one panel per batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if "error" not in r]
    batches = sorted({r["batch"] for r in ok}) or [1]
    models = list(dict.fromkeys(r["model"] for r in ok))
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4), squeeze=False)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run_text_encoder_suite(out_dir: str | Path, names: Iterable[str | TextEncoderSpec] = tuple(TEXT_ENCODERS),
                           batch: int = 32, seq: int = 300, dtype: str = "fp16", *, device: str = "cuda",
                           repeats: int = 5) -> Path:
    """Table 13: latency and parameters of each encoder; writes text_encoders.jsonl and .md, returns the .md."""
    out = Path(out_dir)
    lines = _JsonLines(out / "text_encoders.jsonl")
    for name in names:
        key = text_encoder_name(name) if isinstance(name, str) else name.repo
        record = _run_case(lambda: time_text_encoder(name, batch, seq, dtype, repeats=repeats, device=device))
        label = TABLE13_LABELS.get(key)
        paper = {k: _paper("table13", label, k) for k in ("latency", "params")} if label else {}
        lines.add({"case": "text_encoder", "name": key, "params": count_text_encoder_parameters(name), **record,
                   "paper_table13": paper, "machine": machine_info()})
    rows = [f"| {r['name']} | {r['params'] / 1e6:.1f} | {r['paper_table13'].get('params', '-')} | "
            f"{r.get('error') or _fmt(r['latency_s'])} | {r['paper_table13'].get('latency', '-')} | "
            f"{r.get('attn_implementation', '-')} | {_fmt(r.get('peak_mem_gib'), 1)} |" for r in lines.records]
    text = "\n".join(["# Text-encoder latency (Table 13: batch 32, 300 tokens, FP16; random weights)", "",
                      *(_machine_lines(lines.records[0]) if lines.records else []), "",
                      "| Encoder | Params (M) | Paper (M) | Latency s | Paper s | Attention | Mem GiB |",
                      "|---|---|---|---|---|---|---|", *rows]) + "\n"
    md = out / "text_encoders.md"
    with atomic_path(md) as tmp:
        tmp.write_text(text)
    return md
