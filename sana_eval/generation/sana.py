"""`sana-eval generate`: a benchmark's prompts through the Sana pipeline into its scorer's layout, resumably."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from model.config import DIFFUSERS_NUMERICS
from model.kernel_choice import resolve
from model.pipeline import SamplingConfig, SanaPipeline, load_pipeline
from model.quantize import SCHEME_VERSION
from model.text_encoder import DEFAULT_MODEL, TEXT_ENCODER_PRESETS
from model.weights_io import sha256_tree
from sana_eval import folder_lock
from sana_eval.distributed import SINGLE_PROCESS, World
from sana_eval.generation.layouts import quantize_uint8
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.generation.runner import GenerateFn, GenerationSpec, RunSummary, generate_benchmark

# A preset name builds random weights: seeded, so that every process (and every rerun) makes the same model.
PRESET_INIT_SEED = 0


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
    subset: int | None = None              # prompts keeping the category mix (generation/subsets.py)
    batch_size: int = 1
    shard: str | None = None
    layout: str | None = None
    data: str | None = None
    device: str | None = None
    kernels: str = "auto"                  # the DiT's and DC-AE's eager or fused (Triton) paths; auto: fused on CUDA
    cuda_graphs: str = "auto"              # replayed denoiser steps (bit-identical): not part of the run config
    quantize: str = "none"                 # the DiT's W8A8 or FP8 mode (paper §4, Table 5): part of the run config
    encode_workers: int = 4                # threads encoding and writing files while the next batch generates


MODEL_FIELDS = ("weights", "vae", "text_encoder", "conventions", "device", "kernels", "cuda_graphs", "quantize")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """The pipeline a request's model fields (MODEL_FIELDS) build, kept to generate several benchmarks."""

    model: tuple                           # the MODEL_FIELDS values it was built from
    pipe: Any
    text_config: Any
    pipeline_root: bool
    weights_sha256: str | dict                # the checkpoint's, or how its random weights were drawn


def load(request: GenerateRequest, world: World = SINGLE_PROCESS) -> LoadedModel:
    """The Sana pipeline of `request` on this process's device."""
    weights_path = Path(request.weights)
    pipeline_root = (weights_path / "model_index.json").is_file()
    text_model = request.text_encoder or (request.weights if pipeline_root else DEFAULT_MODEL)
    text_config = dataclasses.replace(TEXT_ENCODER_PRESETS[request.conventions], model=text_model)
    overrides = DIFFUSERS_NUMERICS if request.conventions == "diffusers" else {}
    random_init = not weights_path.exists()
    if random_init:
        torch.manual_seed(PRESET_INIT_SEED)
    pipe = load_pipeline(request.weights, vae=request.vae, text_encoder=text_config,
                         device=world.device or request.device, kernels=request.kernels,
                         cuda_graphs=request.cuda_graphs, quantize=request.quantize, **overrides)
    weights_sha256 = (f"random (preset name; torch.manual_seed({PRESET_INIT_SEED}), default init on "
                      f"{pipe.device.type})" if random_init else sha256_tree(weights_path))
    return LoadedModel(model_fields(request), pipe, text_config, pipeline_root, weights_sha256)


def model_fields(request: GenerateRequest) -> tuple:
    return tuple(getattr(request, name) for name in MODEL_FIELDS)


def pipeline_generate_fn(pipe: SanaPipeline, sampling: SamplingConfig, resolution: int) -> GenerateFn:
    """What `run` hands the runner (also timed by `bench suite evaluate`): prompts and seeds -> uint8 images."""
    def generate_fn(prompts: list[str], seeds: list[int]):
        images = pipe([p.strip() for p in prompts], seeds=seeds, config=sampling, height=resolution,
                      width=resolution)
        return quantize_uint8(images)

    return generate_fn


def run(request: GenerateRequest, world: World = SINGLE_PROCESS, loaded: LoadedModel | None = None) -> RunSummary:
    """`request` through the runner; every process of `world` calls this alike, on its own device. `loaded`: a
    pipeline `load` made from the same model fields (else one is loaded here). The output folder is held from
    before the model loads, so a command into a folder another command writes is refused at once."""
    with folder_lock.writing(Path(request.out), world):
        return generate_into_folder(request, world, loaded)


def generate_into_folder(request: GenerateRequest, world: World, loaded: LoadedModel | None) -> RunSummary:
    """`run`, once the folder is held."""
    benchmark = get_benchmark(request.benchmark)
    use_chi = benchmark.sana_chi if request.chi == "auto" else request.chi == "on"
    sampling = dataclasses.replace(request.sampling, use_chi=use_chi)
    if loaded is None:
        loaded = load(request, world)
    elif loaded.model != model_fields(request):
        raise ValueError("sana.run: the loaded pipeline was built from other model settings than the request's")
    pipe, text_config, pipeline_root = loaded.pipe, loaded.text_config, loaded.pipeline_root
    resolution = request.resolution or pipe.default_resolution

    generate_fn = pipeline_generate_fn(pipe, sampling, resolution)
    # Everything that changes the pixels; a resumed run with a different config is refused by the runner.
    run_config = {
        "weights": request.weights,
        "weights_sha256": loaded.weights_sha256,
        "transformer": dataclasses.asdict(pipe.transformer.config),
        "vae": request.vae or ("pipeline root vae/" if pipeline_root else "dc-ae-f32c32-sana-1.0"),
        "text_encoder": dataclasses.asdict(text_config),
        "sampling": dataclasses.asdict(sampling), "resolution": resolution, "conventions": request.conventions,
        # what ran: fused kernels round once where eager code rounds after every op
        "kernels_run": {"transformer": resolve(pipe.transformer.config.kernels, pipe.device),
                        "dc_ae": resolve(pipe.vae.config.kernels, pipe.device)},
    }
    if request.quantize != "none":  # recorded only when on, so folders made before the option still resume
        run_config["quantize"] = {"mode": request.quantize, "scheme": SCHEME_VERSION}
    if pipe.device.type == "cpu":
        # CPU matmuls reduce in an order set by the intra-op thread count (torchrun sets OMP_NUM_THREADS=1): the
        # last bits, hence some pixels, follow it, so a resume under another count is refused, not mixed.
        run_config["cpu_threads"] = torch.get_num_threads()
    spec = GenerationSpec(run_config, seed=request.seed, limit=request.limit, subset=request.subset,
                          batch_size=request.batch_size,
                          shard=request.shard, layout=request.layout, data=request.data,
                          encode_workers=request.encode_workers)
    return generate_benchmark(request.benchmark, request.out, generate_fn, spec, world)
