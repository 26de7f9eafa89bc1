"""`sana-eval bench suite evaluate`: what one checkpoint's full quality row (paper Tables 7 and 11: FID and CLIP
score on MJHQ-30K, GenEval, DPG-Bench, ImageReward) costs on one GPU, measured with random weights at full size
(speed does not depend on weight values).

Three kinds of cases, each one record of evaluate.jsonl:
- generation: images/s of the real runner (`run_generation` with `sana.pipeline_generate_fn`: Gemma-2, the CFG
  steps, DC-AE, rounding, then encoding and writing in each benchmark's layout in the runner's worker threads) on
  synthetic prompts, `batches` batches per benchmark. The first batch is the warm-up; the rate is that of the
  following full batches, timed from one batch's return to the next (so encoding that outlasts a batch shows).
  Set against the end-to-end bench (`bench e2e`) of the same model at the same text length and dtypes;
- scorer (sana_eval/bench/scorer_speed.py): each scoring network built from its official configuration with random
  weights, timed through the path its scorer runs per image (file decoding, preprocessing, forward at the scorer's
  batch size) on synthetic files in the benchmark's format;
- row: per model, the wall time of the whole row on one GPU from those rates and the benchmarks' sizes, with each
  part's share (sana_eval/bench/evaluate_row.py, which also writes the report).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from metrics.detectors.base import OBJECT_NAMES
from metrics.detectors.mask2former_hf import Mask2FormerConfig
from metrics.detectors.mmdet_convert import Mask2FormerShape
from metrics.fid import FIDConfig
from metrics.image_reward_model import RewardArch
from model.config import TransformerConfig, get_preset
from model.dc_ae import DCAE, DCAE_PRESETS
from model.pipeline import SamplingConfig, SanaPipeline
from model.text_encoder import CHI_VARIANTS, TEXT_ENCODER_PRESETS, TextEncoder
from model.transformer import build_transformer
from sana_eval.bench import e2e
from sana_eval.bench.clock import device_name, free_memory, timing_device
from sana_eval.bench.evaluate_row import ROW_SCORING, dpg_questions, rates, row_time, write_report
from sana_eval.bench.records import JsonLines, machine_info, run_case
from sana_eval.bench.scorer_speed import OFFICIAL_SIZES, RESOLUTION, BlipVQASize, ScorerSizes, time_scorers
from sana_eval.bench.text_encoders import TEXT_ENCODERS, TextEncoderSpec, building
from sana_eval.generation.layouts import get_layout
from sana_eval.generation.prompt_files import Item
from sana_eval.generation.prompt_sets import BENCHMARKS, PromptSet
from sana_eval.generation.runner import GenerationSpec, run_generation
from sana_eval.generation.sana import PRESET_INIT_SEED, pipeline_generate_fn
from sana_eval.io import write_text
from sana_eval.provenance import collect
from sana_eval.smoke.tiny import SMOKE_CLIP_CONFIG, SMOKE_CLIP_NAME, train_tokenizer
from sana_eval.tables.speed import PRESETS

MODELS = ("Sana-0.6B", "Sana-1.6B")
DTYPE_NAMES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


# ----------------------------------------------------------------------------------------------
# What is timed: the generation models and the scoring networks' configurations.

@dataclass(frozen=True)
class GenModel:
    """One row's model: transformer, decoder and text encoder (full size, or tiny for the CPU test)."""

    name: str                              # the paper's name, e.g. "Sana-0.6B"
    transformer: str | TransformerConfig   # a preset name or a config
    vae: str                               # a DC-AE preset (model/dc_ae.py)
    text_encoder: str | TextEncoderSpec    # a TEXT_ENCODERS key or a spec
    resolution: int

    @property
    def config(self) -> TransformerConfig:
        return get_preset(self.transformer) if isinstance(self.transformer, str) else self.transformer

    @property
    def encoder(self) -> TextEncoderSpec:
        return (TEXT_ENCODERS[self.text_encoder] if isinstance(self.text_encoder, str) else self.text_encoder)


def full_models(names: Sequence[str] = MODELS) -> list[GenModel]:
    """The paper's models at 1024 px (Table 14's presets) with Sana's DC-AE and Gemma-2-2B."""
    unknown = [n for n in names if (n, RESOLUTION) not in PRESETS]
    if unknown:
        raise ValueError(f"--models {unknown[0]!r}: known {', '.join(sorted({m for m, _ in PRESETS}))}")
    return [GenModel(n, PRESETS[n, RESOLUTION], "dc-ae-f32c32-sana-1.0", "gemma-2-2b", RESOLUTION) for n in names]


# Tiny stand-ins for the CPU test and `--tiny` (numbers mean nothing): the `tiny` transformer preset over
# dc-ae-tiny's 4 latent channels, a 2-layer Gemma-2 of the preset's caption width, toy scorers.
TINY_GEMMA = TextEncoderSpec("gemma2", 48, 64, 2, 2, 1, 16, 2048, "random tiny Gemma-2")
TINY_MODELS = (GenModel("tiny", get_preset("tiny").replace(in_channels=4), "dc-ae-tiny", TINY_GEMMA, 32),)
TINY_SCORERS = ScorerSizes(
    image_px=32, images=6, detector_images=2, vqa_grids=1, vqa_questions=1, clip_model=SMOKE_CLIP_NAME,
    clip_pretrained=None, clip_config=SMOKE_CLIP_CONFIG, fid=FIDConfig(img_size=80, batch_size=4), fid_resize=False,
    detector=Mask2FormerShape(embed_dim=16, depths=(1, 1, 1, 1), swin_heads=(1, 1, 1, 1), window_size=4,
                              mlp_ratio=2.0, feature_size=32, mask_feature_size=32, encoder_layers=1,
                              encoder_feedforward_dim=32, decoder_layers=1, dim_feedforward=32, num_queries=6,
                              num_labels=len(OBJECT_NAMES), attention_heads=2),
    detector_config=Mask2FormerConfig(scale=(64, 64)),
    vqa=BlipVQASize(vision_width=16, vision_layers=1, vision_heads=2, image_size=32, patch_size=8, text_width=16,
                    text_layers=1, text_heads=2, vocab_size=40, max_new_tokens=2),
    reward=RewardArch(image_size=32, patch_size=16, vision_width=32, vision_depth=1, vision_heads=2, vocab_size=40,
                      text_width=32, text_depth=1, text_heads=2, text_intermediate=64, max_positions=40, proj_dim=8),
    workers=0)


def suite_setup(model_names: Sequence[str], tiny: bool, scorer_images: int | None,
                workers: int | None) -> tuple[Sequence[GenModel], ScorerSizes, str]:
    """The CLI's choices as the suite's arguments: (models, scorer sizes, device); full size on CUDA, or with
    `tiny` the tiny stand-ins on this machine's device."""
    models, sizes = (TINY_MODELS, TINY_SCORERS) if tiny else (full_models(model_names), OFFICIAL_SIZES)
    sizes = replace(sizes, images=scorer_images or sizes.images, workers=sizes.workers if workers is None else workers)
    return models, sizes, ("cuda" if torch.cuda.is_available() else "cpu") if tiny else "cuda"


# ----------------------------------------------------------------------------------------------
# Generation through the runner.

def synthetic_items(benchmark: str, count: int) -> tuple[Item, ...]:
    """`count` items of `benchmark`'s shape (images per prompt, all-digit ids for GenEval's layout, metadata for its
    sidecar); the text only has to be tokenised, every prompt is padded to the same length."""
    bench = BENCHMARKS[benchmark]
    return tuple(Item(f"{i:05d}", f"a photo of a red cat and a green dog on a table, number {i}", bench.n_images,
                      {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
                       "prompt": f"a photo of a cat and a dog {i}"})
                 for i in range(count))


def write_random_gemma(folder: Path, spec: TextEncoderSpec, corpus: Sequence[str], device: torch.device) -> Path:
    """A random Gemma-2 causal LM of `spec`'s dimensions (bf16, as the pipeline runs it) with a tokenizer trained on
    `corpus`, saved as a local model folder that `TextEncoder` loads as it loads the released one."""
    from transformers import Gemma2ForCausalLM  # heavy: only this builder needs the causal-LM class

    tokenizer = train_tokenizer(corpus)
    if len(tokenizer) > spec.vocab:
        raise ValueError(f"tokenizer of {len(tokenizer)} tokens does not fit {spec.repo}'s {spec.vocab}")
    config = spec.config("eager")
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(PRESET_INIT_SEED)
    with building(device, torch.bfloat16):
        model = Gemma2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    free_memory(device)
    return folder


def build_pipeline(model: GenModel, gemma: Path, device: torch.device) -> SanaPipeline:
    """The pipeline `load_pipeline` would make of random weights: the DiT in its preset's dtype, DC-AE in fp32,
    Gemma-2 in bf16 with NVlabs' conventions (docs/generation.md §1.1)."""
    config = model.config
    torch.manual_seed(PRESET_INIT_SEED)
    transformer = build_transformer(config, device=device, dtype=getattr(torch, config.dtype)).eval()
    with device:
        vae = DCAE(DCAE_PRESETS[model.vae]).eval()
    text = TextEncoder(replace(TEXT_ENCODER_PRESETS["nvlabs"], model=str(gemma)), device=device)
    return SanaPipeline(transformer, vae, text, device=device)


@dataclass(frozen=True)
class GenerationTiming:
    model: str
    benchmark: str
    layout: str
    image_format: str
    resolution: int
    batch: int
    steps: int
    use_chi: bool
    text_tokens: int                # Gemma-2 positions per prompt row (CHI + prompt, or prompt alone)
    calls: int                      # generate_fn calls (batches) of the run
    timed_images: int               # images of the full batches after the first
    img_per_s: float                # timed_images / their seconds: the steady rate a long run reaches
    run_s: float                    # the whole run_generation call: start, warm-up batch, last files' encoding
    run_img_per_s: float
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def steady_rate(returns: Sequence[tuple[float, int]], batch: int) -> tuple[int, float]:
    """(images, images/s) of the full batches after the first, each timed from the previous batch's return."""
    images = seconds = 0.0
    for (before, _), (now, n) in zip(returns, returns[1:]):
        if n == batch:
            images, seconds = images + n, seconds + now - before
    if not images:
        raise ValueError(f"no full batch after the first one ({len(returns)} batches): time at least 2 batches")
    return int(images), images / seconds


def time_generation(pipe: SanaPipeline, model: GenModel, benchmark: str, out: Path, *, batch: int, batches: int,
                    steps: int | None = None) -> GenerationTiming:
    """`batches` batches of `benchmark` through the runner into `out`, in its default layout."""
    if batches < 2:
        raise ValueError(f"batches must be at least 2 (the first is the warm-up), got {batches}")
    bench = BENCHMARKS[benchmark]
    prompts = PromptSet(bench, synthetic_items(benchmark, math.ceil(batches * batch / bench.n_images)),
                        "synthetic prompts (bench suite evaluate)", None)
    sampling = SamplingConfig(steps=steps, use_chi=bench.sana_chi)
    generate = pipeline_generate_fn(pipe, sampling, model.resolution)
    returns: list[tuple[float, int]] = []

    def timed(texts: list[str], seeds: list[int]):
        images = generate(texts, seeds)  # uint8 on the CPU: the GPU has finished this batch
        returns.append((time.perf_counter(), len(texts)))
        return images

    spec = GenerationSpec({"bench": "suite evaluate", "model": model.name}, batch_size=batch, progress=False)
    summary = run_generation(prompts, out, timed, spec)
    timed_images, rate = steady_rate(returns, batch)
    encoder = pipe.text_encoder
    return GenerationTiming(
        model.name, benchmark, bench.layout, get_layout(bench.layout).image_format, model.resolution, batch,
        sampling.num_steps, bench.sana_chi, encoder.max_length_all if bench.sana_chi else encoder.config.max_length,
        len(returns), timed_images, rate, summary.seconds, summary.images_generated / summary.seconds,
        device_name(pipe.device))


# ----------------------------------------------------------------------------------------------
# The suite (the row and its report: sana_eval/bench/evaluate_row.py).

def generation_records(model: GenModel, gemma: Path, out: Path, device: torch.device,
                       **timing: Any) -> tuple[list[dict], int]:
    """One record per benchmark of the row, all from one pipeline, and its CHI token count (for the e2e bench);
    the pipeline is gone when this returns."""
    pipe = build_pipeline(model, gemma, device)
    records = [{"model": model.name, "benchmark": benchmark,
                **run_case(lambda benchmark=benchmark: time_generation(pipe, model, benchmark, out / benchmark,
                                                                       **timing))}
               for benchmark in ROW_SCORING]
    return records, pipe.text_encoder.n_chi


def run_evaluate_suite(out_dir: str | os.PathLike, models: Sequence[GenModel], sizes: ScorerSizes = OFFICIAL_SIZES, *,
                       batch: int = 16, batches: int = 4, repeats: int = 3, steps: int | None = None,
                       dpg_csv: str | os.PathLike | None = None, dpg_questions_per_prompt: float | None = None,
                       device: str = "cuda") -> Path:
    """Time generation (per model and benchmark), the end-to-end bench at the same settings, the scoring networks,
    and derive each model's row time; writes evaluate.jsonl, evaluate.md, evaluate.png and provenance.json in
    `out_dir` and returns the Markdown path."""
    dev = timing_device(device)
    questions, questions_source = dpg_questions(dpg_csv, dpg_questions_per_prompt)
    out = Path(out_dir)
    lines = JsonLines(out / "evaluate.jsonl")
    machine = machine_info()
    settings = {"models": [m.name for m in models], "batch": batch, "batches": batches, "repeats": repeats,
                "steps": steps, "scorers": {k: v for k, v in asdict(sizes).items() if k != "clip_config"},
                "dpg_questions_per_prompt": questions, "dpg_questions_source": questions_source}
    write_text(out / "provenance.json", json.dumps(collect(config=settings).to_dict(), indent=1) + "\n")
    with tempfile.TemporaryDirectory(prefix="sana-eval-bench-evaluate-") as tmp:
        tmp = Path(tmp)
        for record in time_scorers(dev, sizes, tmp / "scorers"):
            lines.add({"case": "scorer", **record, "machine": machine})
        gemmas: dict[TextEncoderSpec, Path] = {}
        corpus = [*CHI_VARIANTS["nvlabs"], *(it.prompt for it in synthetic_items("mjhq30k", 8))]
        for m, model in enumerate(models):
            spec = model.encoder
            if spec not in gemmas:
                gemmas[spec] = write_random_gemma(tmp / f"gemma-{len(gemmas)}", spec, corpus, dev)
            records, n_chi = generation_records(model, gemmas[spec], tmp / f"images-{m}", dev, batch=batch,
                                                batches=batches, steps=steps)
            for record in records:
                lines.add({"case": "generation", **record, "machine": machine})
            free_memory(dev)
            for use_chi in (True, False):   # MJHQ and GenEval prompts carry the CHI, DPG and ImageReward do not
                e2e_spec = e2e.E2ESpec(model.transformer, model.resolution, batch, DTYPE_NAMES[model.config.dtype],
                                       SamplingConfig(steps=steps).num_steps, text_dtype="bf16", vae_dtype="fp32",
                                       chi_tokens=n_chi if use_chi else 2, vae=model.vae,
                                       text_encoder=model.text_encoder, repeats=repeats, device=dev)
                lines.add({"case": "e2e", "model": model.name, "use_chi": use_chi,
                           **run_case(lambda spec=e2e_spec: e2e.time_sana_e2e(spec)), "machine": machine})
            write_report(out, [*lines.records, *model_rows(lines.records, models[:m + 1], questions, questions_source,
                                                           machine)], questions_source)
    for row in model_rows(lines.records, models, questions, questions_source, machine):
        lines.add(row)
    return write_report(out, lines.records, questions_source)


def model_rows(records: Sequence[dict], models: Sequence[GenModel], questions: float, source: str,
               machine: dict) -> list[dict]:
    return [{**row_time(model.name, *rates(records, model.name), questions), "dpg_questions_source": source,
             "machine": machine} for model in models]


