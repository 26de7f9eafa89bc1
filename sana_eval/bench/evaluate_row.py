"""A checkpoint's full quality row (paper Tables 7 and 11) on one GPU, from measured rates: each benchmark's
generation and scoring time with the benchmarks' sizes (the prompt-set registry), and the report of
`sana-eval bench suite evaluate` (sana_eval/bench/evaluate_cost.py measures the rates)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from metrics.dpg import KNOWN_BLOBS, load_questions, questions_for
from sana_eval.bench.records import fmt, machine_lines
from sana_eval.generation.prompt_sets import BENCHMARKS
from sana_eval.io import save_figure, write_text

# Table 7/11 row: the benchmarks in the order they are generated, and the scoring each one needs (scorer, unit).
# GenEval's colour classifier runs CLIP on each detected object's crop; counted as one CLIP image per image.
ROW_SCORING: dict[str, tuple[tuple[str, str], ...]] = {
    "mjhq30k": (("fid", "image"), ("clip_score", "image")),
    "geneval": (("geneval_detector", "image"), ("clip_score", "image")),
    "dpg": (("dpg_vqa", "question"),),
    "imagereward": (("image_reward", "image"),),
}

# dpg_bench.csv could not be obtained here (shared/data/dpg_bench/SOURCE.md: "≥ 4 MiB"); each row repeats its
# prompt (408 bytes on average over the 1,065 prompt files) with ~150 bytes of keywords, tuple and question, so
# >= ~7,500 rows: ~7 per prompt, an ESTIMATE, replaced by the count from the file when it is given.
DPG_QUESTIONS_ESTIMATE = 7.0


def dpg_questions(csv_path: str | os.PathLike | None = None, per_prompt: float | None = None) -> tuple[float, str]:
    """(questions per DPG prompt, where the number came from): given, counted in dpg_bench.csv (`csv_path` or
    $SANA_EVAL_DATA/dpg_bench/), else DPG_QUESTIONS_ESTIMATE. Every tile of a prompt is asked all of them."""
    if per_prompt is not None:
        if per_prompt <= 0:
            raise ValueError(f"--dpg-questions-per-prompt must be positive, got {per_prompt}")
        return per_prompt, "given (--dpg-questions-per-prompt)"
    if csv_path is None and os.environ.get("SANA_EVAL_DATA"):
        found = Path(os.environ["SANA_EVAL_DATA"]) / "dpg_bench" / "dpg_bench.csv"
        csv_path = found if found.is_file() else None
    if csv_path is None:
        return DPG_QUESTIONS_ESTIMATE, ("estimate from dpg_bench.csv's size (>= 4 MiB at ~560 bytes per question "
                                        "row), the file not being available; give --dpg-csv for the count")
    qfile = load_questions(csv_path, verify=False)
    items = questions_for(qfile, "fixed")
    official = KNOWN_BLOBS.get(qfile.blob_sha1, "not an official blob")
    return sum(map(len, items.values())) / len(items), f"counted in {csv_path} ({official})"


def row_time(model: str, generation: Mapping[str, float], scorers: Mapping[str, float],
             dpg_questions_per_prompt: float) -> dict:
    """Wall time of `model`'s full row on one GPU: every benchmark generated at its measured images/s, then each of
    its scorers at its measured rate, one after the other. `generation`: benchmark -> img/s; `scorers`: scorer ->
    units/s. A rate that is missing leaves its part out of the total, and the record says which."""
    benchmarks, parts, missing = {}, {"generation": 0.0}, []
    for name, uses in ROW_SCORING.items():
        bench = BENCHMARKS[name]
        images = bench.n_items * bench.n_images
        rate = generation.get(name)
        gen_s = images / rate if rate else None
        if gen_s is None:
            missing.append(f"generation {name}")
        else:
            parts["generation"] += gen_s
        scoring = {}
        for scorer, unit in uses:
            units = images * dpg_questions_per_prompt if unit == "question" else images
            per_s = scorers.get(scorer)
            seconds = units / per_s if per_s else None
            scoring[scorer] = {"unit": unit, "units": units, "per_s": per_s, "seconds": seconds}
            if seconds is None:
                missing.append(f"{scorer} ({name})")
            else:
                parts[scorer] = parts.get(scorer, 0.0) + seconds
        benchmarks[name] = {"images": images, "generation_img_per_s": rate, "generation_s": gen_s,
                            "scoring": scoring}
    total = sum(parts.values())
    return {"case": "row", "model": model, "benchmarks": benchmarks, "parts_s": parts, "total_s": total,
            "shares": {k: v / total for k, v in parts.items()} if total else {},
            "dpg_questions_per_prompt": dpg_questions_per_prompt, "missing": missing}


def rates(records: Sequence[dict], model: str) -> tuple[dict[str, float], dict[str, float]]:
    """(benchmark -> generation img/s of `model`, scorer -> units/s) from a suite's records."""
    generation = {r["benchmark"]: r["img_per_s"] for r in records
                  if r.get("case") == "generation" and r["model"] == model and "error" not in r}
    scorers = {r["scorer"]: r["per_s"] for r in records
               if r.get("case") == "scorer" and "per_s" in r}
    return generation, scorers


def write_report(out: Path, records: Sequence[dict], questions_source: str) -> Path:
    """evaluate.md and evaluate.png of the records so far (rewritten after each model: a run cut short by its time
    limit still leaves a report of what it measured)."""
    plot_rows([r for r in records if r["case"] == "row"], out / "evaluate.png")
    return write_text(out / "evaluate.md", evaluate_markdown(records, questions_source))


def _e2e_rate(records: Sequence[dict], model: str, use_chi: bool) -> float | None:
    for r in records:
        if r["case"] == "e2e" and r["model"] == model and r["use_chi"] == use_chi and "img_per_s" in r:
            return r["img_per_s"]
    return None


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def evaluate_markdown(records: Sequence[dict], questions_source: str) -> str:
    gen = [r for r in records if r["case"] == "generation"]
    scorers = [r for r in records if r["case"] == "scorer"]
    rows = [r for r in records if r["case"] == "row"]
    text = ["# What a full quality row costs on one GPU (random weights)", ""]
    if records:
        text += machine_lines(records[0])
    text += ["", "## Generation through the runner", "",
             "`run_generation` + `sana.pipeline_generate_fn` on synthetic prompts, files encoded and written in "
             "the benchmark's layout by the runner's worker threads. img/s: the full batches after the first (the "
             "warm-up), each timed from the previous batch's return; whole run: the `run_generation` call "
             "(start, warm-up batch and the last batch's encoding included). e2e: `bench e2e` of the same model at "
             "the same text length and dtypes (DiT in its preset's dtype, Gemma-2 bf16, DC-AE fp32); issue 14's "
             "target is runner >= 95% of it.", "",
             "| Model | Benchmark | Layout | Format | Batch | Text tokens | Timed images | Runner img/s | "
             "Whole run img/s | e2e img/s | Runner / e2e |", "|" + "---|" * 11]
    for r in gen:
        if "error" in r:
            text.append(f"| {r['model']} | {r['benchmark']} | {r['error']} |" + " |" * 8)
            continue
        ref = _e2e_rate(records, r["model"], r["use_chi"])
        ratio = f"{r['img_per_s'] / ref:.3f}" if ref else "-"
        text.append(f"| {r['model']} | {r['benchmark']} | {r['layout']} | {r['image_format']} | {r['batch']} | "
                    f"{r['text_tokens']} | {r['timed_images']} | {fmt(r['img_per_s'])} | {fmt(r['run_img_per_s'])} | "
                    f"{fmt(ref)} | {ratio} |")
    text += ["", "## Scoring networks", "",
             "Each built from its official configuration with random weights, timed through its scorer's path on "
             "synthetic files (JPEG for FID, CLIP and ImageReward; PNG for GenEval; 2x2 PNG grids for DPG).", "",
             "| Scorer | Network | Params (M) | Unit | Batch | Workers | Timed | Units/s |", "|" + "---|" * 8]
    for r in scorers:
        if "per_s" not in r:
            text.append(f"| {r['scorer']} | {r.get('skipped') or r.get('error')} |" + " |" * 6)
            continue
        text.append(f"| {r['scorer']} | {r['network']} | {r['params'] / 1e6:.1f} | {r['unit']} | {r['batch']} | "
                    f"{r['workers']} | {r['units']} | {fmt(r['per_s'], 2)} |")
    for row in rows:
        text += ["", f"## Row time on one GPU: {row['model']}", "",
                 "| Benchmark | Images | Generation img/s | Generation min | Scoring (min) |", "|---|---|---|---|---|"]
        for name, b in row["benchmarks"].items():
            scoring = "; ".join(f"{k} {s['units']:,.0f} {s['unit']}s at {fmt(s['per_s'], 2)}/s = "
                                f"{_minutes(s['seconds'])}" for k, s in b["scoring"].items())
            text.append(f"| {name} | {b['images']:,} | {fmt(b['generation_img_per_s'])} | "
                        f"{_minutes(b['generation_s'])} | {scoring} |")
        text += ["", "| Part | Minutes | Share |", "|---|---|---|"]
        text += [f"| {k} | {_minutes(v)} | {100 * row['shares'][k]:.1f}% |" for k, v in row["parts_s"].items()]
        text.append(f"| **total** | **{_minutes(row['total_s'])}** | 100% |")
        if row["missing"]:
            text.append(f"\nNot in the total (no rate measured): {', '.join(row['missing'])}.")
    text += ["", "## Notes", "",
             f"- DPG-Bench questions per prompt: {rows[0]['dpg_questions_per_prompt'] if rows else '-'} "
             f"({questions_source}); every tile of the 2x2 grid is asked all of them, one VQA call each.",
             "- GenEval's colour classifier runs CLIP ViT-L/14 on the crops of detected objects; counted here as one "
             "CLIP image per image at the CLIP-score rate.",
             "- DPG VQA: with random weights BLIP almost never emits its end token, so an answer decodes all "
             "max_new_tokens where a real yes/no answer stops after a few: an upper bound. Each grid's decoding "
             "is shared by fewer questions here than in the benchmark. The official scorer is ModelScope "
             "mPLUG-large (not installed here); BLIP VQA base is our alternative backend, timed instead.",
             "- The Gemma-2 tokenizer is a BPE trained on the CHI and the prompts (no download): its CHI token "
             "count sets the runner's text length (the table's Text tokens) and the e2e bench's alike.",
             "- Random weights make noisy images, which PNG compresses worse and more slowly than real ones: the "
             "PNG layouts' (GenEval, DPG) encoding is, if anything, dearer here than in a real run.",
             "- FID's MJHQ-30K reference statistics are computed once and cached, so they are not in the row.",
             "- The row runs each part after the other on one GPU; scoring could overlap generation, so the total "
             "is an upper bound of the wall time."]
    return "\n".join(text) + "\n"


def plot_rows(rows: Sequence[dict], path: Path) -> None:
    """One horizontal bar per model: minutes of generation and of each scorer, stacked."""
    from matplotlib.figure import Figure  # heavy, optional: only the plot needs matplotlib

    fig = Figure(figsize=(9, 1.2 + 0.8 * max(1, len(rows))))
    ax = fig.subplots()
    parts = list(dict.fromkeys(k for r in rows for k in r["parts_s"]))
    colors = dict(zip(parts, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")))
    for y, row in enumerate(rows):
        left = 0.0
        for part in parts:
            minutes = row["parts_s"].get(part, 0.0) / 60
            ax.barh(y, minutes, left=left, color=colors.get(part), edgecolor="black", linewidth=0.3,
                    label=part if y == 0 else None)
            left += minutes
        ax.text(left, y, f" {left:.0f} min", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["model"] for r in rows])
    ax.set_xlabel("minutes on one GPU")
    ax.set_title("A full Table 7/11 row: generation and scoring")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
