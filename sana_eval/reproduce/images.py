"""Runners for the cells made by generating and scoring images (Tables 5, 7, 10, 11) or by an autoencoder round
trip (Table 1), on a machine that has the weights and data. Images and scores are kept under $SANA_EVAL_RUNS
(default `<repo>/runs`): a rerun with the same recipe resumes generation and reuses the stored results."""
from __future__ import annotations

import warnings
from pathlib import Path

from metrics.base import Result
from metrics.detectors.mask2former_hf import HF_REPO as HF_DETECTOR
from metrics.vqa.blip import DEFAULT_REPO as BLIP_VQA
from model.pipeline import SamplingConfig
from sana_eval.generation import sana
from sana_eval.generation.gallery import GALLERY, write_gallery
from sana_eval.generation.manifest import read_run
from sana_eval.paths import data_dir, local_weights, runs_root
from sana_eval.reproduce.measurement import Measurement
from sana_eval.results import read_results, write_results
from sana_eval.scoring.dispatch import score_benchmark
from sana_eval.tables import recipes as R
from sana_eval.tables.schema import Column, Need, Setting

# benchmark -> its folder under $SANA_EVAL_DATA (laid out like shared/data)
DATA_FOLDERS = {"mjhq30k": "mjhq30k", "geneval": "geneval", "dpg": "dpg_bench", "imagereward": "imagereward"}
# benchmark -> (scorer settings that replace the paper's scorer (recipes.PAPER_SCORING), their needs): when only the
# paper's scorer is missing, a cell is not compared and the images scored with these are its extra columns (#13).
# DPG: both modes ask the same mPLUG (modelscope), so the stand-in is another VQA model, not the other mode.
UNOFFICIAL_SCORING: dict[str, tuple[dict[str, Setting], tuple[Need, ...]]] = {
    "geneval": ({"detector_weights": HF_DETECTOR},
                (Need("weights", HF_DETECTOR, "transformers' Mask2Former COCO, an unofficial GenEval detector"),)),
    "dpg_bench": ({"vqa": "blip", "vqa_weights": BLIP_VQA},
                  (Need("weights", BLIP_VQA, "BLIP VQA, an unofficial DPG-Bench scorer"),)),
}


def checkpoint_in(repo: Path) -> Path:
    """The transformer checkpoint inside a released repo folder: a diffusers `transformer/`, the NVlabs
    `checkpoints/*.pth`, or the folder itself when it is a diffusers transformer folder."""
    if (repo / "transformer").is_dir():
        return repo / "transformer"
    pths = sorted((repo / "checkpoints").glob("*.pth"))
    if len(pths) == 1:
        return pths[0]
    if (repo / "config.json").is_file():
        return repo
    found = ", ".join(p.name for p in pths) or "none"
    raise ValueError(f"{repo}: no single transformer checkpoint (transformer/ or checkpoints/*.pth; found {found})")


def _need_local(repo_id: str) -> Path:
    path = local_weights(repo_id)
    if path is None:  # the needs check ran first, so this only happens if the files vanished in between
        raise FileNotFoundError(f"weights {repo_id} not found under $SANA_EVAL_WEIGHTS or in the HF cache")
    return path


def _data(benchmark: str) -> str | None:
    folder = data_dir() / DATA_FOLDERS[benchmark]
    return str(folder) if folder.exists() else None


def stored_result(path: Path, make) -> Result:
    """The metric result stored at `path`, else `make()` stored there (atomically) for the next rerun."""
    if path.is_file():
        [result] = read_results(path).values()
        return result
    result = make()
    write_results([result], path)
    return result


def _score(metric: str, benchmark: str, images: Path, settings: dict[str, Setting]) -> Result:
    """`settings` carry the scorer's protocol: the paper's (R.PAPER_SCORING) or the extra column's."""
    limit = settings["prompt_limit"]
    detector, vqa = settings.get("detector_weights"), settings.get("vqa_weights")
    # mjhq30k: FID, CLIP score, or Table 5's ImageReward of MJHQ prompts (one image each); the others: one metric
    options = {"mjhq30k": {"metrics": [metric], "mjhq": str(data_dir() / "mjhq30k"), "limit": limit,
                           "fid_size": int(settings.get("fid_resize") or 512)},
               "geneval": {"data": _data("geneval"), "limit": int(limit) if limit else None,
                           "geneval_protocol": settings.get("geneval_protocol"),
                           "detector_weights": str(_need_local(str(detector))) if detector else None},
               # both DPG modes read the same VQA answers: one cache beside the run serves the second mode free
               "dpg": {"dpg_mode": settings.get("dpg_mode"), "cache_dir": str(images.parent / f"{images.name}.vqa"),
                       "vqa": settings.get("vqa"), "vqa_weights": str(_need_local(str(vqa))) if vqa else None},
               "imagereward": {"data": _data("imagereward")}}[benchmark]
    [result] = score_benchmark(benchmark, images, **options)
    return result


def _protocol_name(settings: dict[str, Setting]) -> str:
    """A file-name tag for the scorer protocol and weights in `settings` ("" when the benchmark has one scorer)."""
    keys = ("geneval_protocol", "dpg_mode", "detector_weights", "vqa_weights")
    return "".join(f".{Path(str(settings[k])).name}" for k in keys if settings.get(k))


def run_folder(settings: dict[str, Setting]) -> Path:
    """Where a generate_score recipe's images go: the folder its printed command names, under runs_root()."""
    return runs_root() / R.run_name(settings)


def _refresh_gallery(out: Path, benchmark: str) -> None:
    """The run's sample page, rewritten when a manifest is newer; a page that cannot be made costs a warning only."""
    manifests = [p.stat().st_mtime for p in out.glob("manifest*.jsonl")]
    page = out / GALLERY
    if not manifests or (page.is_file() and page.stat().st_mtime >= max(manifests)):
        return
    try:
        write_gallery(out, benchmark)
    except (ValueError, OSError) as err:
        warnings.warn(f"{out}: no sample gallery ({err})", stacklevel=2)


def _run_identity(out: Path) -> str:
    """Weights and prompt-set hashes of a generation run, from its manifest, for the report's provenance."""
    identity, _ = read_run(out)
    weights = identity.get("run_config", {}).get("weights_sha256", "?")
    digest = weights if isinstance(weights, str) else ", ".join(f"{k} {v[:12]}" for k, v in sorted(weights.items()))
    prompts = str(identity.get("benchmark", {}).get("items_sha256", "?"))[:12]
    return f"weights sha256 {digest}; prompts {prompts}"


def _generate(settings: dict[str, Setting]) -> Path:
    """The recipe's images (resumed when already there), in run_folder(settings)."""
    preset, benchmark, limit = str(settings["preset"]), R.CLI_BENCHMARKS[str(settings["benchmark"])], \
        settings["prompt_limit"]
    out = run_folder(settings)
    shift = settings.get("shift")
    sampling = SamplingConfig(sampler=R.CLI_SAMPLER, steps=int(settings["steps"]), cfg_scale=float(settings["cfg"]),
                              pag_scale=float(settings["pag"]), shift=float(shift) if shift is not None else None)
    weights = str(checkpoint_in(_need_local(f"{R.HF_ORG}/{preset}")))
    sana.run(sana.GenerateRequest(benchmark=benchmark, weights=weights, out=out, vae=str(_need_local(R.VAE)),
                                  text_encoder=str(_need_local(R.TEXT_ENCODER)), sampling=sampling,
                                  resolution=int(settings["resolution"]), seed=int(settings["seed"]),
                                  limit=int(limit) if limit else None, data=_data(benchmark),
                                  quantize=str(settings.get("quantize") or "none")))
    _refresh_gallery(out, benchmark)
    return out


def _key(settings: dict[str, Setting]) -> str:
    """The aggregate key of the recipe's metric and field: "geneval/counting"."""
    return str(settings["metric"]) if settings["field"] == "overall" else f"{settings['metric']}/{settings['field']}"


def _scored(settings: dict[str, Setting], out: Path) -> float:
    """The images `out` scored with the scorer in `settings`, stored beside them for the next rerun."""
    metric = str(settings["metric"])
    path = out.parent / f"{out.name}.{metric}{_protocol_name(settings)}.json"
    benchmark = R.CLI_BENCHMARKS[str(settings["benchmark"])]
    return stored_result(path, lambda: _score(metric, benchmark, out, settings)).aggregate[_key(settings)]


# Paper §5 with the NVlabs metric scripts' settings (recipes.py): generate, then score with the paper's scorers.
def run_generate_score(settings: dict[str, Setting], column: Column) -> Measurement:
    out = _generate(settings)
    value = _scored(settings, out)
    detail = f"{_key(settings)} = {value:.4f}{_protocol_name(settings)} ({out}; {_run_identity(out)})"
    return Measurement(value, detail, _beside(settings, out, {}))


def run_unofficial_scores(settings: dict[str, Setting], column: Column) -> dict[str, float]:
    """Only the extra columns of a cell whose paper scorer is missing (#13 item 2): its images scored with the
    UNOFFICIAL_SCORING stand-in under the paper's protocol, the alternative protocol and the revised shift."""
    stand_in, _ = UNOFFICIAL_SCORING[str(settings["benchmark"])]
    chosen = {**settings, **stand_in}
    out = _generate(chosen)
    return {_extra_name(stand_in): _scored(chosen, out), **_beside(chosen, out, stand_in)}


# Extra columns of the report, never compared (docs/protocols.md §9): the official/fixed scorer protocol on the same
# images, and for 512 px the revised checkpoint config's flow shift (recipes.PAPER_TIME_SHIFT).
def _beside(settings: dict[str, Setting], out: Path, changed: dict[str, Setting]) -> dict[str, float]:
    """The extra numbers of `settings`, whose images are `out`; their names start with the `changed` settings."""
    extras = {}
    protocol = {k.removeprefix("beside_"): v for k, v in settings.items()
                if k.startswith("beside_") and k != "beside_shift"}
    if protocol:
        extras[_extra_name({**changed, **protocol})] = _scored({**settings, **protocol}, out)
    if settings.get("beside_shift") is not None:
        revised = {**settings, "shift": settings["beside_shift"]}
        extras[_extra_name({**changed, "shift": revised["shift"]})] = _scored(revised, _generate(revised))
    return extras


def _extra_name(settings: dict[str, Setting]) -> str:
    """The report column of a number made with `settings` changed from the compared cell's: "dpg_mode fixed"."""
    return ", ".join(f"{k} {v}" for k, v in settings.items())


# Paper Table 1: encode-decode the real MJHQ-30K images; resolution and count are not stated, we use 1024 px, all.
def run_reconstruction(settings: dict[str, Setting], column: Column) -> Measurement:
    vae = str(settings["vae"])
    ae = {R.VAE: "dc-ae-f32c32", R.SDXL_VAE: "sdxl-vae"}[vae]
    weights = _need_local(vae)
    mjhq = str(data_dir() / "mjhq30k")
    result = stored_result(runs_root() / f"recon-{ae}-1024.json",
                           lambda: score_benchmark("recon", ae=ae, weights=str(weights), mjhq=mjhq,
                                                   resolution=1024)[0])
    metric = str(settings["metric"])
    return Measurement(result.aggregate[metric], f"{metric} = {result.aggregate[metric]:.4f} ({ae}, 1024 px)")
