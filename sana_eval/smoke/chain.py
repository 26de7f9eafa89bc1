"""`make smoke`: the whole chain (prompts -> generation -> every scorer -> report) on tiny random models, offline.

Prompts come in each benchmark's official schema: the first items of the real files when $SANA_EVAL_DATA holds
them, else the few embedded below. Everything else (Gemma-2, DC-AE, DiT, FID-Inception, CLIP, Mask2Former, BLIP,
ImageReward) is built here with random weights (`sana_eval.smoke.tiny`), so the numbers only prove the
chain runs; they are NOT comparable to the paper, and the report says so in its first line.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from metrics import dpg, geneval
from metrics.base import Result, sha256_file
from metrics.clip_score import CLIPScore, CLIPScoreConfig
from metrics.detectors.clip_color import CLIPColorClassifier
from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF
from metrics.fid import FID, FIDConfig
from metrics.image_reward import ImageRewardConfig, ImageRewardScore, benchmark_image_set
from metrics.images import generated_like
from metrics.mjhq import MJHQ_CATEGORIES, load_meta, mjhq_from_folder
from metrics.vqa.blip import BlipVQA
from model.pipeline import SamplingConfig
from model.text_encoder import CHI_VARIANTS
from sana_eval.generation.layouts import quantize_uint8
from sana_eval.generation.prompt_sets import PromptSet, get_benchmark
from sana_eval.generation.runner import GenerationSpec, run_generation
from sana_eval.io import write_text
from sana_eval.provenance import collect
from sana_eval.results import write_results
from sana_eval.smoke import tiny as tiny

WARNING = ("SMOKE TEST: every number here comes from tiny RANDOM models and is NOT comparable to the paper "
           "(it only shows that the whole chain runs).")
RESOLUTION = 32          # px; the tiny DC-AE compresses by 4, so 8x8 latents
STEPS = 2
SEED = 0
BATCH_SIZE = 8
N_ITEMS = {"geneval": 3, "dpg": 2, "imagereward": 2, "mjhq30k": 3}

# ----------------------------------------------------------------------------------------------
# Embedded prompts, used when $SANA_EVAL_DATA does not hold the official files. GenEval, DPG and ImageReward
# items are the first ones of the official files (benchmarks.Source pins); the DPG questions and the MJHQ entries
# are written here in the official schemas (dpg_bench.csv and meta_data.json are not available offline).

GENEVAL_LINES = (
    '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}',
    '{"tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a cow"}',
    '{"tag": "single_object", "include": [{"class": "bicycle", "count": 1}], "prompt": "a photo of a bicycle"}',
)
DPG_PROMPTS = {
    "0": "An expansive field, blanketed by the soft light of morning, cradles a collection of eight cabbages, their "
         "green heads round and plump. These vegetables are nestled among rows of rich soil, dotted with glistening "
         "droplets of dew that cling to their crinkled leaves. As wisps of mist begin to lift, the cabbages lie "
         "poised, ready for the day's impending harvest.",
    "1": "An eye-catching vibrant red pickup truck with a stout and rectangular build is parked on the sandy shores "
         "as dusk sets in. The truck's glossy paint contrasts with the soft, amber hues of the setting sun reflected "
         "off the vehicle's surface. In the background, the gentle waves of the ocean can be heard as they meet the "
         "beach, with the silhouette of palm trees swaying gently in the evening breeze.",
}
DPG_CSV_COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                   "category_detailed", "tuple", "question_natural_language")
# (item, proposition_id, dependency, tuple, question), written for this smoke test in the ELLA schema.
DPG_QUESTIONS = (
    ("0", 1, "0", "entity - whole (field)", "Is there a field?"),
    ("0", 2, "0", "entity - whole (cabbages)", "Are there cabbages?"),
    ("0", 3, "2", "other - count (cabbages, ==8)", "Are there eight cabbages?"),
    ("0", 4, "2", "attribute - color (cabbages, green)", "Are the cabbages green?"),
    ("0", 5, "2,1", "relation - spatial (cabbages, field, in)", "Are the cabbages in the field?"),
    ("1", 1, "0", "entity - whole (truck)", "Is there a pickup truck?"),
    ("1", 2, "1", "attribute - color (truck, red)", "Is the truck red?"),
    ("1", 3, "0", "entity - whole (beach)", "Is there a beach?"),
    ("1", 4, "1,3", "relation - spatial (truck, beach, on)", "Is the truck on the beach?"),
)
IMAGEREWARD_ENTRIES = (
    {"id": "005695-0057", "prompt": "a concept art of a vehicle, cyberpunk"},
    {"id": "005784-0093", "prompt": "desolate space, 4, octane, beautifully, epic, magical, cinematic, masterpiece"},
)
MJHQ_META = {
    "smoke0000animals": {"category": "animals", "prompt": "a red fox sitting in fresh snow, golden hour"},
    "smoke0001food": {"category": "food", "prompt": "a bowl of ramen with a soft boiled egg, studio photo"},
    "smoke0002vehicles": {"category": "vehicles", "prompt": "a vintage green car parked on a cobbled street"},
}


# ----------------------------------------------------------------------------------------------
# Stages: each records its wall time, the files it wrote and at least one number.

@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)     # relative to the smoke output folder
    numbers: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@contextmanager
def _stage(stages: list[Stage], name: str) -> Iterator[Stage]:
    stage = Stage(name)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield stage
    stage.seconds = time.perf_counter() - start
    stage.notes += sorted({f"warning: {w.message}" for w in caught})
    stages.append(stage)


# ----------------------------------------------------------------------------------------------
# Prompts: a few items per benchmark, written in the official schema, read back by the real parsers.

def _official_file(data: Path | None, name: str) -> Path | None:
    if data is None:
        return None
    source = get_benchmark(name).source
    for cand in (data / get_benchmark(name).data_subdir / source.name, data / source.name):
        if cand.exists():
            return cand
    return None


def write_prompt_subsets(root: Path, data: Path | None) -> dict[str, str]:
    """Writes `root/<subdir>/<official file>` for the four benchmarks (and dpg_bench.csv); returns their sources."""
    sources: dict[str, str] = {}
    n = N_ITEMS

    real = _official_file(data, "geneval")
    lines = real.read_text().splitlines()[:n["geneval"]] if real else GENEVAL_LINES[:n["geneval"]]
    sources["geneval"] = _describe(real, n["geneval"])
    write_text(root / "geneval" / "evaluation_metadata.jsonl", "\n".join(lines) + "\n")

    real_prompts = _official_file(data, "dpg")
    real_csv = real_prompts.parent / "dpg_bench.csv" if real_prompts else None
    prompts_dir = root / "dpg_bench" / "prompts"
    prompts_dir.mkdir(parents=True, exist_ok=True)
    if real_prompts and real_csv.is_file():  # both or neither: the questions must be those of the prompts
        files = sorted((p for p in real_prompts.iterdir() if p.suffix == ".txt"), key=lambda p: p.name)[:n["dpg"]]
        for f in files:
            shutil.copyfile(f, prompts_dir / f.name)
        with open(real_csv, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r["item_id"] in {f.stem for f in files}]
        sources["dpg"] = _describe(real_prompts, n["dpg"]) + f"; questions from {real_csv}"
    else:
        for item, prompt in list(DPG_PROMPTS.items())[:n["dpg"]]:
            write_text(prompts_dir / f"{item}.txt", prompt)
        rows = [dict(zip(DPG_CSV_COLUMNS, (item, DPG_PROMPTS[item], "smoke", qid, dep, tup.split(" - ")[0],
                                            tup.split(" - ")[1].split(" (")[0], tup, question)))
                for item, qid, dep, tup, question in DPG_QUESTIONS if item in DPG_PROMPTS]
        sources["dpg"] = "embedded (first official prompts; questions written for the smoke test)"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=DPG_CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(root / "dpg_bench" / "dpg_bench.csv", buf.getvalue())

    real = _official_file(data, "imagereward")
    entries = json.loads(real.read_text())[:n["imagereward"]] if real else list(IMAGEREWARD_ENTRIES)
    sources["imagereward"] = _describe(real, n["imagereward"])
    write_text(root / "imagereward" / "benchmark-prompts.json", json.dumps(entries, indent=4))

    real = _official_file(data, "mjhq30k")
    meta = json.loads(real.read_text()) if real else MJHQ_META  # dicts keep the file's key order
    meta = dict(list(meta.items())[:n["mjhq30k"]])
    sources["mjhq30k"] = _describe(real, n["mjhq30k"]) if real else "embedded (schema-only examples, not MJHQ items)"
    write_text(root / "mjhq30k" / "meta_data.json", json.dumps(meta, indent=1))
    return sources


def _describe(real: Path | None, n: int) -> str:
    if real is None:
        return "embedded (first official items)"
    digest = "" if real.is_dir() else f", sha256 {sha256_file(real)}"
    return f"first {n} items of {real}{digest}"


def write_reference_images(mjhq_root: Path, seed: int = SEED) -> list[Path]:
    """Smooth random 64-px JPEGs at `imgs/<category>/<id>.jpg`, the MJHQ-30K layout (all ten folders exist)."""
    meta = load_meta(mjhq_root / "meta_data.json")
    for category in MJHQ_CATEGORIES:
        (mjhq_root / "imgs" / category).mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for key, entry in meta.items():
        low = torch.rand(1, 3, 8, 8, generator=gen)
        img = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear")  # (1, 3, 64, 64)
        pixels = (img[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (64, 64, 3)
        path = mjhq_root / "imgs" / entry["category"] / f"{key}.jpg"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# The chain.

def _check_finite(result: Result, key: str) -> None:
    value = float(result.aggregate[key])
    if not math.isfinite(value):
        raise ValueError(f"smoke: {result.metric} aggregate {key!r} is {value}")


def run_smoke(out_dir: Path, *, progress: bool = False) -> Path:
    """Runs the chain into `out_dir` and returns the Markdown report's path (JSON report and results beside it)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []
    start = time.perf_counter()
    rel = lambda p: str(Path(p).relative_to(out_dir))  # noqa: E731
    data_env = os.environ.get("SANA_EVAL_DATA")
    with tempfile.TemporaryDirectory(prefix="sana-eval-smoke-") as tmp_name:
        tmp = Path(tmp_name)

        with _stage(stages, "prompts (official schemas, real parsers)") as st:
            sources = write_prompt_subsets(out_dir / "data", Path(data_env) if data_env else None)
            sets: dict[str, PromptSet] = {name: get_benchmark(name).load(out_dir / "data", verify=False)
                                          for name in N_ITEMS}
            st.files = [rel(p) for p in sorted((out_dir / "data").rglob("*")) if p.is_file()]
            st.numbers = {f"{name}/items": float(len(s.items)) for name, s in sets.items()}

        with _stage(stages, "tiny random models") as st:
            corpus = [it.prompt for s in sets.values() for it in s.items]
            gemma = tiny.write_tiny_gemma(tmp / "gemma2", [*CHI_VARIANTS["nvlabs"], *corpus], SEED)
            pipe = tiny.tiny_pipeline(gemma, RESOLUTION, SEED)
            fid_weights = tiny.write_random_fid_weights(tmp / "fid" / "fid-inception-random.pth", SEED)
            clip = tiny.tiny_clip(tmp / "clip", SEED)
            mask2former = tiny.tiny_mask2former(SEED)
            blip, blip_processor = tiny.tiny_blip(tmp / "blip", SEED)
            reward = tiny.tiny_image_reward(tmp / "image_reward", SEED)
            models = {"dit": pipe.transformer, "dc_ae": pipe.vae, "gemma2": pipe.text_encoder.decoder,
                      "clip": clip.model, "mask2former": mask2former, "blip_vqa": blip}
            st.numbers = {f"{k}/parameters": float(sum(p.numel() for p in m.parameters())) for k, m in models.items()}
            weight_files = {"gemma2": gemma / "model.safetensors", "fid_inception": fid_weights,
                            "clip": clip.weights, "image_reward": reward.weights}
            provenance = collect(seeds={"smoke": SEED}, config=_smoke_config(pipe), weights=weight_files)

        images: dict[str, Path] = {}
        for name, prompts in sets.items():
            with _stage(stages, f"generate {name}") as st:
                images[name] = out_dir / "images" / name
                summary = _generate(pipe, prompts, images[name], gemma, progress)
                files = sorted(p for p in images[name].rglob("*") if p.is_file())
                st.files = [rel(p) for p in files]
                pixels = [np.asarray(Image.open(p)) for p in files if p.suffix in (".png", ".jpg")]
                st.numbers = {"files": float(summary.files), "written": float(summary.written),
                              "kept": float(summary.kept), "mean_pixel": float(np.mean([x.mean() for x in pixels]))}

        results: list[Result] = []
        with _stage(stages, "reference images (synthetic MJHQ layout)") as st:
            refs = write_reference_images(out_dir / "data" / "mjhq30k")
            st.files = [rel(p) for p in refs]
            st.numbers = {"images": float(len(refs))}
        results += _score_all(out_dir, sets, images, fid_weights, clip, mask2former, (blip, blip_processor),
                              reward, stages)

    with _stage(stages, "report") as st:
        results_path = write_results(results, out_dir / "results.json")
        st.files = [rel(results_path), "smoke_report.json", "smoke_report.md"]
        st.numbers = {"results": float(len(results))}
    total = time.perf_counter() - start
    payload = {"warning": WARNING, "total_seconds": total, "provenance": provenance.to_dict(),
               "stages": [dataclasses.asdict(s) for s in stages], "data_sources": sources,
               "results_file": rel(results_path),
               "headline": {r.metric: {k: v for k, v in r.aggregate.items() if "/" not in k} for r in results}}
    write_text(out_dir / "smoke_report.json", json.dumps(payload, indent=1, allow_nan=False) + "\n")
    return write_text(out_dir / "smoke_report.md", render_markdown(payload))


def _smoke_config(pipe) -> dict[str, Any]:
    return {"resolution": RESOLUTION, "steps": STEPS, "sampler": "flow_dpm_solver", "batch_size": BATCH_SIZE,
            "items": N_ITEMS, "transformer": dataclasses.asdict(pipe.transformer.config), "vae": "dc-ae-tiny (random)",
            "text_encoder": "2-layer random Gemma-2, hidden 32, tokenizer trained on the prompts and CHI"}


def _generate(pipe, prompts: PromptSet, out: Path, gemma: Path, progress: bool):
    """One benchmark through the resumable runner, in its scorer's layout, with Sana's CHI choice for it."""
    sampling = SamplingConfig(steps=STEPS, use_chi=prompts.benchmark.sana_chi)

    def generate_fn(batch: list[str], seeds: list[int]) -> torch.Tensor:
        images = pipe([p.strip() for p in batch], seeds=seeds, config=sampling, height=RESOLUTION, width=RESOLUTION)
        return quantize_uint8(images)  # (B, H, W, 3) uint8

    # The models live in a fresh temp dir each run; their weights' hashes identify them, so a rerun resumes.
    run_config = {"smoke": "tiny random models", "gemma_sha256": sha256_file(gemma / "model.safetensors"),
                  "transformer": dataclasses.asdict(pipe.transformer.config),
                  "transformer_sha256": _state_sha256(pipe.transformer), "vae": "dc-ae-tiny (random)",
                  "vae_sha256": _state_sha256(pipe.vae), "sampling": dataclasses.asdict(sampling),
                  "resolution": RESOLUTION}
    spec = GenerationSpec(run_config, seed=SEED, batch_size=BATCH_SIZE, progress=progress)
    return run_generation(prompts, out, generate_fn, spec)


def _state_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _score_all(out_dir: Path, sets: dict[str, PromptSet], images: dict[str, Path], fid_weights: Path, clip,
               mask2former, blip, reward, stages: list[Stage]) -> list[Result]:
    """Every scorer on its benchmark's images, each with its tiny random backbone."""
    scores = out_dir / "scores"
    reference = mjhq_from_folder(out_dir / "data" / "mjhq30k")
    generated = generated_like(reference, images["mjhq30k"], ".jpg")
    results = []

    def record(st: Stage, result: Result, key: str, *files: Path) -> None:
        results.append(result)
        st.numbers = {k: float(v) for k, v in result.aggregate.items() if "/" not in k}
        _check_finite(result, key)
        st.files = [str(Path(f).relative_to(out_dir)) for f in files]

    with _stage(stages, "score fid (MJHQ layout)") as st:  # docs/protocols.md §1.2
        config = FIDConfig(img_size=RESOLUTION, weights_path=str(fid_weights), weights_sha256=sha256_file(fid_weights),
                           device="cpu", num_workers=0, allow_few_images=True)
        # One overall FID: each per-category FID would cost another 2048x2048 matrix square root.
        record(st, FID(config).score(generated, reference, by_category=False), "fid",
               *[i.path for i in generated.items])
    with _stage(stages, "score clip_score (MJHQ layout)") as st:  # §2.1
        config = CLIPScoreConfig(model=clip.name, pretrained=None, weights_path=str(clip.weights), precision="fp32",
                                 device="cpu", num_workers=0)
        record(st, CLIPScore(config).score(generated), "clip_score", *[i.path for i in generated.items])
    with _stage(stages, "score geneval") as st:  # §3
        detector = Mask2FormerHF(config=Mask2FormerConfig(scale=(64, 64), device="cpu"), model=mask2former)
        colors = CLIPColorClassifier(device="cpu", model=clip.model, preprocess=clip.preprocess,
                                     tokenizer=clip.tokenizer)
        items = sets["geneval"].items
        out_file = scores / "geneval_results.jsonl"
        with warnings.catch_warnings():  # the tiny Swin's window exceeds its last stage; no official detector here
            warnings.filterwarnings("ignore", message="Mask2Former input .* transformers shrinks the window")
            record(st, geneval.score(images["geneval"], detector, colors, out_file=out_file, limit=len(items),
                                     expected_metadata=[it.metadata for it in items]), "geneval", out_file)
        if all(json.loads(row)["details"] == "{}" for row in out_file.read_text().splitlines()):
            st.notes.append("the random detector kept no object above GenEval's thresholds, so the rules ran on "
                            "empty detections and the colour classifier was built but not called")
    with _stage(stages, "score dpg (fixed mode)") as st:  # §4
        vqa = BlipVQA(device="cpu", max_new_tokens=3, model=blip[0], processor=blip[1])
        out_file = scores / "dpg_fixed.json"
        questions = out_dir / "data" / "dpg_bench" / "dpg_bench.csv"
        record(st, dpg.score(images["dpg"], vqa, mode="fixed", csv_path=questions, verify_csv=False,
                             out_file=out_file), "dpg", out_file)
    with _stage(stages, "score image_reward") as st:  # §5
        config = ImageRewardConfig(weights_path=str(reward.weights), med_config_path=str(reward.med_config),
                                   tokenizer_path=str(reward.vocab_dir), download=False, device="cpu", num_workers=0)
        image_set = benchmark_image_set(images["imagereward"], sets["imagereward"].items)
        record(st, ImageRewardScore(config, reward.arch).score(image_set, by_prompt=True), "image_reward",
               *[i.path for i in image_set.items])
    return results


# ----------------------------------------------------------------------------------------------
# Report.

def render_markdown(payload: dict[str, Any]) -> str:
    prov = payload["provenance"]
    lines = [f"**{payload['warning']}**", "", "# sana-eval smoke run", "",
             f"- git {prov['git_commit'] or 'no commit'}{' (dirty)' if prov['git_dirty'] else ''}, "
             f"{prov['utc_time']}, Python {prov['python']}, {prov['platform']}, CPU {prov['cpu']}",
             f"- packages: {', '.join(f'{k} {v}' for k, v in prov['packages'].items())}",
             f"- seeds: {prov['seeds']}; weights sha256: "
             + ", ".join(f"{k} {v[:12]}" for k, v in prov["weights_sha256"].items()),
             f"- resolution {RESOLUTION} px, {STEPS} sampling steps; results bundle: `{payload['results_file']}`",
             f"- total {payload['total_seconds']:.1f} s", "",
             "## Prompt sources", "", *[f"- {k}: {v}" for k, v in payload["data_sources"].items()], "",
             "## Stages", "", "| stage | seconds | files | numbers |", "| --- | ---: | ---: | --- |"]
    for s in payload["stages"]:
        nums = ", ".join(f"{k} {v:.4g}" for k, v in s["numbers"].items())
        lines.append(f"| {s['name']} | {s['seconds']:.2f} | {len(s['files'])} | {nums} |")
    lines += ["", "## Notes", ""]
    lines += [f"- {s['name']}: {n}" for s in payload["stages"] for n in s["notes"]] or ["- none"]
    lines += ["", "Every scorer ran its real code on a tiny random backbone (FID-Inception, CLIP, Mask2Former + "
              "CLIP colours, BLIP VQA, ImageReward); no scripted backend was used.", ""]
    return "\n".join(lines)
