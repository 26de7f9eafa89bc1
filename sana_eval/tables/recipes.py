"""Recipe builders: one function per kind of measurement, so a setting is written once for every cell using it."""
from __future__ import annotations

from sana_eval.tables.schema import Need, Recipe, Setting

# Inference defaults of the repo's metric toolkit (docs/tables.md §4, §5); the paper states none.
SAMPLER = "flow_dpm-solver"
STEPS = 20
CFG = 4.5
SEED = 0
PAPER_GPU = "A100"                         # Tables 7, 8, 9, 13, 14 captions
TIMING_GPU = "the paper's GPU; any CUDA GPU runs the timing and the report names it"
PEER_BENCH = "sana_eval.bench.peers"       # diffusers timings of the peer models (FLUX, SD3, PixArt, ...)
CLI_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}

HF_ORG = "Efficient-Large-Model"           # presets are named after the released checkpoints (model/config.py)
TEXT_ENCODER = "Efficient-Large-Model/gemma-2-2b-it"
VAE = "mit-han-lab/dc-ae-f32c32-sana-1.0"
SDXL_VAE = "stabilityai/sdxl-vae"

# benchmark -> (datasets it reads, images per prompt) per docs/tables.md §5
BENCHMARKS: dict[str, tuple[tuple[str, ...], int]] = {
    "mjhq30k": (("mjhq30k_prompts",), 1),
    "geneval": (("geneval_prompts",), 4),
    "dpg_bench": (("dpg_bench_prompts", "dpg_bench_questions"), 4),
    "imagereward": (("imagereward_prompts",), 10),
}
# Our CLI's names for the benchmarks and the sampler.
CLI_BENCHMARKS = {"mjhq30k": "mjhq30k", "geneval": "geneval", "dpg_bench": "dpg", "imagereward": "imagereward"}
CLI_SAMPLER = "flow_dpm_solver"
# metric -> extra datasets its scorer reads (FID compares against the MJHQ reference images)
METRIC_DATASETS = {"fid": ("mjhq30k_images",)}

# The scorers of the toolkit that produced the paper's numbers (docs/protocols.md §9): a cell compared with the paper
# is scored with these or not run. GenEval: SANA's counting (§3.7) on GenEval's own Mask2Former checkpoint, run
# through transformers after `sana-eval convert-detector`; DPG-Bench: ELLA's scorer as it is (§4.3).
GENEVAL_CHECKPOINT = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth"
GENEVAL_DETECTOR = "geneval/mask2former-swin-s-coco"      # the converted checkpoint, under $SANA_EVAL_WEIGHTS
DPG_VQA_PACKAGE = "modelscope"                            # mPLUG-large, DPG-Bench's VQA model, runs through it
# benchmark -> (settings of the paper's scorer, the alternative reported beside it, never compared)
PAPER_SCORING: dict[str, tuple[dict[str, Setting], dict[str, Setting]]] = {
    "geneval": ({"geneval_protocol": "sana", "detector_weights": GENEVAL_DETECTOR}, {"geneval_protocol": "official"}),
    "dpg_bench": ({"dpg_mode": "official"}, {"dpg_mode": "fixed"}),
}
PAPER_SCORING_NEEDS = {
    "geneval": (Need("weights", GENEVAL_DETECTOR, f"GenEval's detector: sana-eval convert-detector "
                                                  f"{GENEVAL_CHECKPOINT} $SANA_EVAL_WEIGHTS/{GENEVAL_DETECTOR}"),),
    "dpg_bench": (Need("package", DPG_VQA_PACKAGE, "DPG-Bench's VQA model mPLUG-large, the paper's scorer; `make "
                                                   "test-mplug` builds its environment (docs/protocols.md §4.5)"),),
}
# Sana's 512 px configs shipped flow_shift 1.0 and were changed to 3.0 after the paper (600M: January 2025, 1600M:
# March 2025). The presets (model/config.py) follow the revised configs; the paper's numbers predate the change, so
# a 512 px cell is compared at the first revision's shift and shows the revised one's number beside it.
PAPER_TIME_SHIFT = {512: 1.0}
REVISED_SHIFT = {512: 3.0}
PAPER_SCORING_FLAGS = {"geneval": f" --geneval-protocol sana --detector-weights $SANA_EVAL_WEIGHTS/{GENEVAL_DETECTOR}",
                       "dpg_bench": " --dpg-mode official"}


def architecture(table: str, preset: str, quantity: str) -> Recipe:
    """Table 6 field or parameter count of a preset; parameters are counted on the meta device."""
    needs = (Need("code", "model.transformer", "parameter count"),) if quantity == "params" else ()
    return Recipe("architecture", {"preset": preset, "quantity": quantity}, needs,
                  command=f"sana-eval reproduce {table}")


def macs(table: str, preset: str, resolution: int, *, self_attention: str, ffn: str, mlp_ratio: float,
         in_channels: int, patch_size: int) -> Recipe:
    """MACs of one forward of the preset's width and depth with the given block design (Table 8): batch 1, no
    CFG pair, a full 300-token caption; counted on the meta device (model/macs.py)."""
    settings = {"preset": preset, "resolution": resolution, "self_attention": self_attention, "ffn": ffn,
                "mlp_ratio": mlp_ratio, "in_channels": in_channels, "patch_size": patch_size,
                "text_tokens": 300, "batch": 1}
    return Recipe("macs", settings, (Need("code", "model.macs", "MAC counter"),),
                  command=f"sana-eval reproduce {table}")


def peer_params(table: str, peer: str) -> Recipe:
    """Denoiser parameters of a peer's published config (sana_eval/bench/peer_models.py), counted on the meta device."""
    return Recipe("peer_params", {"peer": peer},
                  (Need("code", "diffusers", "the peer models' implementations"),),
                  command=f"sana-eval reproduce {table}")


def run_name(settings: dict[str, Setting]) -> str:
    """The folder (under runs/) of a generate_score recipe's images: one per checkpoint, benchmark, resolution,
    prompt subset, quantisation and flow shift (when the recipe sets them)."""
    limit, quantize, shift = settings["prompt_limit"], settings.get("quantize"), settings.get("shift")
    return (f"{settings['preset']}-{CLI_BENCHMARKS[str(settings['benchmark'])]}-{settings['resolution']}"
            + (f"-first{limit}" if limit else "") + (f"-{quantize}" if quantize else "")
            + (f"-shift{shift}" if shift is not None else ""))


def generate_score(preset: str, resolution: int, benchmark: str, metric: str, field: str = "overall",
                   limit: int | None = None, quantize: str | None = None) -> Recipe:
    """Generate the benchmark's images with the released checkpoint, then score them (paper §5); `quantize`: the
    DiT in W8A8 (paper §4, Table 5) or FP8 (model/quantize.py)."""
    datasets, per_prompt = BENCHMARKS[benchmark]
    settings = {"preset": preset, "resolution": resolution, "benchmark": benchmark, "metric": metric,
                "field": field, "images_per_prompt": per_prompt, "prompt_limit": limit, "sampler": SAMPLER,
                "steps": STEPS, "cfg": CFG, "pag": 1.0, "seed": SEED}
    if quantize:
        settings["quantize"] = quantize
    if metric == "fid":
        settings["fid_resize"] = 512       # toolkit default; the size behind the paper's 1024-px FIDs is unknown
    paper_scoring, beside = PAPER_SCORING.get(benchmark, ({}, {}))
    settings.update(paper_scoring)
    settings.update({f"beside_{key}": value for key, value in beside.items()})
    if resolution in PAPER_TIME_SHIFT:
        settings.update(shift=PAPER_TIME_SHIFT[resolution], beside_shift=REVISED_SHIFT[resolution])
    needs = (Need("gpu", "any CUDA GPU", "image generation"),
             Need("weights", f"{HF_ORG}/{preset}", "transformer"),
             Need("weights", TEXT_ENCODER, "text encoder"),
             Need("weights", VAE, "decoder"),
             *(Need("dataset", d, benchmark) for d in (*datasets, *METRIC_DATASETS.get(metric, ()))),
             Need("metric", metric, "scorer"),
             *PAPER_SCORING_NEEDS.get(benchmark, ()))
    limit_flag = f" --limit {limit}" if limit else ""
    cli_benchmark = CLI_BENCHMARKS[benchmark]
    # Table 5's Image-Reward scores MJHQ prompts, not the ImageReward benchmark: that needs its own scorer call.
    score_benchmark = "imagereward" if metric == "image_reward" and benchmark != "mjhq30k" else cli_benchmark

    def generate_and_score(shift: float | None) -> str:
        run = f"runs/{run_name({**settings, 'shift': shift})}"
        score = (f"sana-eval score --benchmark {score_benchmark} --images {run} --out {run}/results.json"
                 + (f" --mjhq $SANA_EVAL_DATA/mjhq30k --metrics {metric}" if cli_benchmark == "mjhq30k" else "")
                 + PAPER_SCORING_FLAGS.get(benchmark, "")
                 + (limit_flag if score_benchmark in ("mjhq30k", "geneval") else ""))   # score what was generated
        return (f"sana-eval generate --benchmark {cli_benchmark} --weights $SANA_EVAL_WEIGHTS/{preset}"
                f" --resolution {resolution}{limit_flag} --sampler {CLI_SAMPLER} --steps {STEPS} --cfg {CFG}"
                + (f" --shift {shift}" if shift is not None else "") + (f" --quantize {quantize}" if quantize else "")
                + f" --seed {SEED} --out {run} && {score}")

    shifts = (PAPER_TIME_SHIFT[resolution], REVISED_SHIFT[resolution]) if resolution in PAPER_TIME_SHIFT else (None,)
    return Recipe("generate_score", settings, needs, " && ".join(generate_and_score(s) for s in shifts))


def speed(preset: str, resolution: int, measure: str, *, batch: int, gpu: str = PAPER_GPU, steps: int = STEPS,
          dtype: str = "float16", baseline: str | None = None, quantize: str | None = None,
          design: dict[str, Setting] | None = None, vae: str | None = None, kernels: str | None = None) -> Recipe:
    """Throughput (images/s), latency (s) or speedup over a baseline model: random weights, timed end to end on
    whatever CUDA GPU runs it (sana_eval/bench/e2e.py); the report names that GPU next to the paper's.

    Table 8 times block designs: `design` overrides the preset's fields (self_attention, ffn, mlp_ratio,
    in_channels, patch_size), `vae` names the decoder ("sdxl-vae" for F8C4), `kernels` the linear-attention path
    ("eager" PyTorch or the fused "triton" kernels of paper §2.2), `quantize` the DiT's W8A8 (paper §4, Table 5)
    or FP8 GEMMs. Left out, the preset and its defaults run."""
    settings = {"preset": preset, "resolution": resolution, "measure": measure, "batch": batch, "steps": steps,
                "dtype": dtype, "gpu": gpu, "baseline": baseline, "quantize": quantize,
                # docs/tables.md §7: unknown whether Gemma and the DC-AE decode are inside the paper's timings;
                # we include them ("denoise": the 20 transformer steps alone; both are in every cell's detail)
                "scope": "end_to_end", **(design or {})}
    settings.update({k: v for k, v in (("vae", vae), ("kernels", kernels)) if v})
    needs = [Need("gpu", gpu, TIMING_GPU)]
    if baseline:
        needs.append(Need("code", PEER_BENCH, f"timing of the speedup baseline {baseline} with diffusers"))
    if kernels == "triton":
        needs.append(Need("code", "model.kernels", "the fused Triton kernels (paper §2.2 kernel fusion)"))
    extra = (f" --baseline {baseline}" if baseline else "") + (f" --quantize {quantize}" if quantize else "")
    extra += "".join(f" --set {key}={value}" for key, value in (design or {}).items())
    extra += (f" --vae {vae}" if vae else "") + (f" --kernels {kernels}" if kernels else "")
    command = (f"sana-eval bench e2e --preset {preset} --resolution {resolution} --batch {batch}"
               f" --steps {steps} --dtype {CLI_DTYPES[dtype]}{extra}")
    return Recipe("speed", settings, tuple(needs), command)


PEER_TIMED_STEPS = 3                       # denoiser forwards timed per peer generation, scaled to its steps


def peer_speed(peer: str, resolution: int, measure: str, *, batch: int, gpu: str = PAPER_GPU,
               dtype: str = "float16", baseline: str | None = None) -> Recipe:
    """Throughput, latency or speedup of a peer model (FLUX, SD3, PixArt, ...): its diffusers implementation with
    random weights, its own default steps (sana_eval/bench/peer_models.py), timed end to end (sana_eval/bench/peers.py).
    The denoiser is timed over PEER_TIMED_STEPS forwards and scaled to the step count: each step is the same
    forward, and FLUX-dev's 50 steps at batch 16 would not fit a GPU budget otherwise."""
    settings = {"peer": peer, "resolution": resolution, "measure": measure, "batch": batch, "steps": None,
                "timed_steps": PEER_TIMED_STEPS, "dtype": dtype, "gpu": gpu, "baseline": baseline,
                "scope": "end_to_end"}
    needs = (Need("gpu", gpu, TIMING_GPU), Need("code", PEER_BENCH, "peer model timing"),
             Need("code", "diffusers", "the peer models' implementations"))
    command = (f"sana-eval bench suite peers --peers {peer} --resolutions {resolution} --batch {batch}"
               f" --dtype {CLI_DTYPES[dtype]} --out runs/peers")
    return Recipe("speed", settings, needs, command)


def text_encoder(repo: str, measure: str) -> Recipe:
    """Parameters (meta device, no weights) or latency (random weights on a CUDA GPU) of a text encoder's
    published architecture (Tables 9 and 13: A100, FP16, batch 32, 300 tokens)."""
    settings = {"model": repo, "measure": measure, "batch": 32, "sequence_length": 300, "dtype": "float16",
                "gpu": PAPER_GPU}
    needs = (Need("gpu", PAPER_GPU, TIMING_GPU),) if measure == "latency" else ()
    command = (f"sana-eval bench text-encoder --text-encoder {repo} --batch 32 --sequence-length 300"
               f" --dtype fp16")
    return Recipe("text_encoder", settings, needs, command)


def reconstruction(vae: str, metric: str) -> Recipe:
    """Autoencoder round trip on MJHQ-30K images (Table 1); resolution and sample count are unknown (§7)."""
    settings = {"vae": vae, "dataset": "mjhq30k", "metric": metric, "resolution": None, "samples": None}
    needs = (Need("weights", vae, "autoencoder"), Need("dataset", "mjhq30k_images", "reconstruction inputs"),
             Need("metric", "recon", "rFID / PSNR / SSIM / LPIPS"))
    ae = {VAE: "dc-ae-f32c32", SDXL_VAE: "sdxl-vae"}[vae]
    command = (f"sana-eval score --benchmark recon --ae {ae} --weights $SANA_EVAL_WEIGHTS/{vae} "
               f"--mjhq $SANA_EVAL_DATA/mjhq30k --resolution 1024 --out runs/recon-{ae}.json")
    return Recipe("reconstruction", settings, needs, command)
