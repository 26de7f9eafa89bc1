"""`sana-eval generate`: a benchmark's prompts through the Sana pipeline into its scorer's layout, resumably."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from model.config import DIFFUSERS_NUMERICS
from model.kernel_choice import resolve
from model.pipeline import SamplingConfig, load_pipeline
from model.text_encoder import DEFAULT_MODEL, TEXT_ENCODER_PRESETS
from model.weights_io import sha256_tree
from sana_eval.generation.layouts import quantize_uint8
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.generation.runner import GenerationSpec, RunSummary, generate_benchmark


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    benchmark: str
    weights: str
    out: Path
    vae: str | None = None                 # None: the pipeline root's vae/, else dc-ae-f32c32-sana-1.0
    text_encoder: str | None = None        # None: the pipeline root, else Efficient-Large-Model/gemma-2-2b-it
    conventions: str = "nvlabs"            # "diffusers": CHI quotes, lower-casing, CFG mask and model numerics
    sampling: SamplingConfig = SamplingConfig()
    chi: str = "auto"                      # auto: as Sana's script for this benchmark (off for DPG, ImageReward)
    resolution: int | None = None
    seed: int = 0
    limit: int | None = None
    batch_size: int = 1
    shard: str | None = None
    layout: str | None = None
    data: str | None = None
    device: str | None = None
    kernels: str = "auto"                  # the DiT's and DC-AE's eager or fused (Triton) paths; auto: fused on CUDA
    cuda_graphs: str = "auto"              # replayed denoiser steps (bit-identical): not part of the run config


def run(request: GenerateRequest) -> RunSummary:
    benchmark = get_benchmark(request.benchmark)
    use_chi = benchmark.sana_chi if request.chi == "auto" else request.chi == "on"
    sampling = dataclasses.replace(request.sampling, use_chi=use_chi)
    weights_path = Path(request.weights)
    pipeline_root = (weights_path / "model_index.json").is_file()
    text_model = request.text_encoder or (request.weights if pipeline_root else DEFAULT_MODEL)
    text_config = dataclasses.replace(TEXT_ENCODER_PRESETS[request.conventions], model=text_model)
    overrides = DIFFUSERS_NUMERICS if request.conventions == "diffusers" else {}
    pipe = load_pipeline(request.weights, vae=request.vae, text_encoder=text_config, device=request.device,
                         kernels=request.kernels, cuda_graphs=request.cuda_graphs, **overrides)
    resolution = request.resolution or pipe.default_resolution

    def generate_fn(prompts: list[str], seeds: list[int]):
        images = pipe([p.strip() for p in prompts], seeds=seeds, config=sampling, height=resolution,
                      width=resolution)
        return quantize_uint8(images)

    # Everything that changes the pixels; a resumed run with a different config is refused by the runner.
    run_config = {
        "weights": request.weights,
        "weights_sha256": sha256_tree(weights_path) if weights_path.exists() else "random (preset name)",
        "transformer": dataclasses.asdict(pipe.transformer.config),
        "vae": request.vae or ("pipeline root vae/" if pipeline_root else "dc-ae-f32c32-sana-1.0"),
        "text_encoder": dataclasses.asdict(text_config),
        "sampling": dataclasses.asdict(sampling), "resolution": resolution, "conventions": request.conventions,
        # what ran: fused kernels round once where eager code rounds after every op
        "kernels_run": {"transformer": resolve(pipe.transformer.config.kernels, pipe.device),
                        "dc_ae": resolve(pipe.vae.config.kernels, pipe.device)},
    }
    spec = GenerationSpec(run_config, seed=request.seed, limit=request.limit, batch_size=request.batch_size,
                          shard=request.shard, layout=request.layout, data=request.data)
    return generate_benchmark(request.benchmark, request.out, generate_fn, spec)
