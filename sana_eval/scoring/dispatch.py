"""The one map from a benchmark name to its scorer, for `sana-eval score`, the table runners
(sana_eval/reproduce/images.py) and the sweeps (sana_eval/reproduce/sweeps.py).

Options are keyword arguments named after `sana-eval score`'s flags (`fid_size` is `--fid-size`), so one error
message serves the command line and Python callers. Each benchmark takes only the options its scorer reads: an
option that would be ignored is refused, naming it. An option passed as None counts as not given (the scorer's
default applies), which is how the command line leaves out the flags it was not given.

The scorers are looked up on `sana_eval.scoring.scorers` at call time, so tests can replace them there.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metrics.base import Result, WorkShare
from sana_eval.distributed import SINGLE_PROCESS, World
from sana_eval.scoring import scorers

DEFAULT_AE = "dc-ae-f32c32"
COMMON = ("device", "cache_dir")
FID_AND_CLIP = ("metrics", "fid_size", "allow_few_images", "fid_weights", "clip_weights", "cross_check")

Options = dict[str, Any]


def _renamed(options: Options, **names: str) -> Options:
    """`options` with keys renamed to the scorer's parameter names, where they differ from the flags."""
    return {names.get(key, key): value for key, value in options.items()}


def _mjhq_source(options: Options) -> scorers.MJHQSource:
    """The MJHQ-30K reference (FID's real images and the prompts); takes `mjhq` and `limit` out of `options`."""
    return scorers.MJHQSource(folder=options.pop("mjhq", None), cache_dir=options.get("cache_dir"),
                              limit=options.pop("limit", None))


def _mjhq30k(images: str | Path | None, options: Options) -> list[Result]:
    source = _mjhq_source(options)
    return scorers.score_mjhq(images, source, **_renamed(options, cross_check="cross_checks",
                                                         weights="reward_weights"))


def _folder(images: str | Path | None, options: Options) -> list[Result]:
    return scorers.score_folder(images, **_renamed(options, cross_check="cross_checks"))


def _recon(images: str | Path | None, options: Options) -> list[Result]:
    source = _mjhq_source(options)
    return [scorers.score_recon(options.pop("ae", DEFAULT_AE), options.pop("weights", None), source, **options)]


def _geneval(images: str | Path | None, options: Options) -> list[Result]:
    return [scorers.score_geneval(images, **options)]


def _dpg(images: str | Path | None, options: Options) -> list[Result]:
    if "no_verify_csv" in options:
        options["verify_csv"] = not options.pop("no_verify_csv")
    return [scorers.score_dpg(images, **_renamed(options, dpg_mode="mode", dpg_csv="csv", tile="resolution"))]


def _imagereward(images: str | Path | None, options: Options) -> list[Result]:
    return [scorers.score_imagereward(images, **options)]


@dataclass(frozen=True)
class BenchmarkScorer:
    """How one benchmark is scored: what it measures, the options it takes, and whether it reads an image folder."""

    summary: str
    options: tuple[str, ...]
    score: Callable[[str | Path | None, Options], list[Result]]
    reads_images: bool = True          # recon scores an autoencoder on the real MJHQ images, not a folder
    splits: bool = True                # whether torchrun's processes can share the work (recon: not yet)


BENCHMARKS: dict[str, BenchmarkScorer] = {
    "mjhq30k": BenchmarkScorer("FID, CLIP score, ImageReward of generated MJHQ-30K images (Tables 5, 7)",
                               (*COMMON, *FID_AND_CLIP, "mjhq", "limit", "subset", "ext", "weights"), _mjhq30k),
    "folder": BenchmarkScorer("FID against --reference and CLIP score of any flat image folder",
                              (*COMMON, *FID_AND_CLIP, "reference", "prompts"), _folder),
    "recon": BenchmarkScorer("an autoencoder's round trip of the real MJHQ-30K images: rFID, PSNR, SSIM, LPIPS "
                             "(Table 1)",
                             (*COMMON, "mjhq", "limit", "ae", "weights", "resolution", "fid_weights",
                              "allow_few_images"), _recon, reads_images=False, splits=False),
    "geneval": BenchmarkScorer("GenEval with the official rules or SANA's (Table 10)",
                               (*COMMON, "detector", "detector_weights", "clip_weights", "limit", "data",
                                "geneval_protocol", "subset"), _geneval),
    "dpg": BenchmarkScorer("DPG-Bench (Table 11)",
                           (*COMMON, "vqa", "vqa_weights", "dpg_mode", "dpg_csv", "no_verify_csv", "grid", "tile",
                            "subset", "data"),
                           _dpg),
    "imagereward": BenchmarkScorer("the ImageReward benchmark (Table 11)", (*COMMON, "weights", "data", "subset"),
                                   _imagereward),
}
OPTIONS = tuple(dict.fromkeys(option for spec in BENCHMARKS.values() for option in spec.options))


def flag(option: str) -> str:
    """The `sana-eval score` flag of a scoring option."""
    return "--" + option.replace("_", "-")


def benchmarks_taking(option: str) -> tuple[str, ...]:
    return tuple(name for name, spec in BENCHMARKS.items() if option in spec.options)


def check_options(name: str, images: str | Path | None, options: Options) -> BenchmarkScorer:
    """The benchmark's scorer, after refusing an unknown benchmark, an unknown option or one it does not take."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    unknown = [option for option in options if option not in OPTIONS]
    if unknown:
        raise ValueError(f"unknown scoring option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    ignored = [flag(option) for option in options if option not in spec.options]
    if not spec.reads_images and images is not None:
        ignored.insert(0, "--images")
    if ignored:
        verb = "does" if len(ignored) == 1 else "do"
        raise ValueError(f"{', '.join(ignored)} {verb} not apply to --benchmark {name} (it takes "
                         f"{', '.join(flag(option) for option in spec.options)})")
    if spec.reads_images and images is None:
        raise ValueError(f"--benchmark {name} needs --images DIR (as sana-eval generate wrote it)")
    return spec


def score_benchmark(name: str, images: str | Path | None = None, world: World = SINGLE_PROCESS,
                    **options: Any) -> list[Result]:
    """Score benchmark `name` (mjhq30k, folder, recon, geneval, dpg, imagereward) on the image folder `images`
    (None for recon); `options` are the benchmark's own (see BENCHMARKS), None meaning "not given".

    Every process of `world` calls this alike: each scores its share of the images on its own device, the parts
    meet in the cache folder (`cache_dir`, required then), and every process returns the whole result, equal to
    one process's."""
    given = {key: value for key, value in options.items() if value is not None}
    spec = check_options(name, images, given)
    if world.size > 1:
        if not spec.splits:
            raise ValueError(f"--benchmark {name} runs in one process; start it without torchrun")
        if "cache_dir" not in given:
            raise ValueError(f"--benchmark {name} across {world.size} processes needs --cache-dir on a filesystem "
                             f"every process reads")
        given["share"] = WorkShare(world.rank, world.size, world.barrier)
    if world.device is not None and "device" not in given:
        given["device"] = world.device
    results = spec.score(images, given)
    # Every process holds the per-item values; aggregates that only the main process computes in full (FID's
    # matrix square root) travel from it, so every process returns the same results.
    return world.gather(results if world.is_main else None, "the scores")[0]
