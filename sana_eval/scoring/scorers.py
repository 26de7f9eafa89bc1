"""The scorers behind `sana-eval score`: an image folder (or an autoencoder) -> metric results
(`metrics.base.Result`). `sana_eval.scoring.dispatch.score_benchmark` picks one by benchmark name.

MJHQ-30K: FID and CLIP score of generated `<id>.jpg` against the real images and prompts (paper Table 7), and
ImageReward of those images (Table 5).
recon: an autoencoder's encode-decode of the real MJHQ images, rFID / PSNR / SSIM / LPIPS (paper Table 1).
GenEval, DPG-Bench, ImageReward: the benchmarks' official rules (Tables 10, 11).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from metrics import dpg, geneval, image_reward
from metrics.base import ONE_PROCESS, MetricError, Result, WorkShare
from metrics.clip_crosscheck import CROSS_CHECKS as CLIP_CROSS
from metrics.clip_score import CLIPScore, CLIPScoreConfig
from metrics.detectors import get_color_classifier, get_detector
from metrics.fid import FID, MIN_FID_IMAGES, FIDConfig
from metrics.fid_crosscheck import CROSS_CHECKS as FID_CROSS
from metrics.images import ImageItem, ImageSet, folder_image_set, generated_like
from metrics.mjhq import mjhq
from metrics.recon import ReconConfig, reconstruction_metrics
from metrics.vqa import get_vqa
from model.dc_ae_keys import load_dc_ae
from sana_eval.generation.manifest import read_run
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.generation.subsets import item_category, subset_indices, subset_items

AUTOENCODERS = ("dc-ae-f32c32", "sdxl-vae", "sd-f32c64")
MJHQ_METRICS = ("fid", "clip_score", "image_reward")


@dataclass(frozen=True)
class MJHQSource:
    folder: str | None = None       # local copy: meta_data.json + <category>/<id>.jpg
    cache_dir: str | None = None    # else the HF dataset from the HF cache (HF_HUB_OFFLINE honoured), unzipped here
    limit: int | None = None        # first N ids in meta_data.json order

    def load(self) -> ImageSet:
        return mjhq(self.limit, folder=self.folder, cache_dir=self.cache_dir)


def _cross_checks(names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split cross-check column names between FID and CLIP score; each name must belong to one of them."""
    unknown = sorted(set(names) - set(FID_CROSS) - set(CLIP_CROSS))
    if unknown:
        raise MetricError(f"unknown cross-check(s) {', '.join(unknown)}; FID: {', '.join(FID_CROSS)}; "
                          f"CLIP score: {', '.join(CLIP_CROSS)}")
    return tuple(n for n in names if n in FID_CROSS), tuple(n for n in names if n in CLIP_CROSS)


def score_mjhq(images: str | Path, source: MJHQSource, metrics: Sequence[str] = ("fid", "clip_score"), *,
               fid_size: int = 512, ext: str = ".jpg", allow_few_images: bool = False,
               device: str | None = None, cache_dir: str | None = None,
               fid_weights: str | None = None, clip_weights: str | None = None,
               cross_checks: Sequence[str] = (), reward_weights: str | None = None, subset: int | None = None,
               share: WorkShare = ONE_PROCESS) -> list[Result]:
    """FID (Sana-compatible, `fid_size` px), CLIP score and ImageReward (paper Table 5: one image per MJHQ
    prompt, `reward_weights` = ImageReward.pt) of generated MJHQ images (`<images>/<id><ext>`)."""
    unknown = sorted(set(metrics) - set(MJHQ_METRICS))
    if unknown:
        raise MetricError(f"unknown MJHQ metric(s) {', '.join(unknown)}; expected {', '.join(MJHQ_METRICS)}")
    fid_checks, clip_checks = _cross_checks(cross_checks)
    reference = source.load()
    if subset is not None:  # the prompts `generate --subset` made, and their real images only
        kept = subset_indices([item.category for item in reference.items], subset)
        reference = ImageSet(f"{reference.name} subset {subset}", reference.revision,
                             tuple(reference.items[i] for i in kept))
    generated = generated_like(reference, images, ext)
    results = []
    if "fid" in metrics:
        config = FIDConfig(img_size=fid_size, weights_path=fid_weights, device=device, cache_dir=cache_dir,
                           allow_few_images=allow_few_images, cross_checks=fid_checks)
        # Per-category FID needs the same minimum per category; a subset run reports the overall number only.
        by_category = all(len(reference.subset(c)) >= MIN_FID_IMAGES for c in reference.categories)
        results.append(FID(config, share).score(generated, reference, by_category=by_category))
    if "clip_score" in metrics:
        config = CLIPScoreConfig(weights_path=clip_weights, device=device, cache_dir=cache_dir,
                                 cross_checks=clip_checks)
        results.append(CLIPScore(config, share).score(generated))
    if "image_reward" in metrics:
        config = image_reward.ImageRewardConfig(weights_path=reward_weights, device=device, cache_dir=cache_dir)
        results.append(image_reward.ImageRewardScore(config, share=share).score(generated))
    return results


def _folder_prompts(images: Path, prompts: str | None) -> dict[str, str]:
    """File stem -> prompt: from a JSON {stem: prompt} file, else from the folder's `sana-eval generate` manifest."""
    if prompts is not None:
        try:
            table = json.loads(Path(prompts).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MetricError(f"{prompts}: not a readable JSON object of image stem -> prompt ({err})") from None
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise MetricError(f"{prompts}: expected a JSON object of image stem -> prompt")
        return table

    _, records = read_run(images)
    return {Path(file).stem: rows[-1]["prompt"] for file, rows in records.items()}


def score_folder(images: str | Path, *, reference: str | None = None, prompts: str | None = None,
                 metrics: Sequence[str] = ("fid", "clip_score"), fid_size: int = 512,
                 allow_few_images: bool = False, device: str | None = None, cache_dir: str | None = None,
                 fid_weights: str | None = None, clip_weights: str | None = None,
                 cross_checks: Sequence[str] = (), share: WorkShare = ONE_PROCESS) -> list[Result]:
    """Any flat folder of images: FID against a `reference` folder, CLIP score against `prompts` (or the
    prompts recorded by `sana-eval generate`), with the same protocols as the MJHQ-30K scores."""
    unknown = sorted(set(metrics) - {"fid", "clip_score"})
    if unknown:
        raise MetricError(f"unknown folder metric(s) {', '.join(unknown)}; expected fid, clip_score")
    fid_checks, clip_checks = _cross_checks(cross_checks)
    folder = folder_image_set(images)
    results = []
    if "fid" in metrics:
        if reference is None:
            raise MetricError("FID of a folder needs --reference DIR (the real images)")

        config = FIDConfig(img_size=fid_size, weights_path=fid_weights, device=device, cache_dir=cache_dir,
                           allow_few_images=allow_few_images, cross_checks=fid_checks)
        results.append(FID(config, share).score(folder, folder_image_set(reference), by_category=False))
    if "clip_score" in metrics:
        table = _folder_prompts(Path(images), prompts)
        missing = [i.id for i in folder.items if i.id not in table]
        if missing:
            raise MetricError(f"{images}: no prompt for image {missing[0]!r} ({len(missing)} without)")
        with_prompts = ImageSet(folder.name, folder.revision,
                                tuple(ImageItem(i.id, i.path, None, table[i.id]) for i in folder.items))
        config = CLIPScoreConfig(weights_path=clip_weights, device=device, cache_dir=cache_dir,
                                 cross_checks=clip_checks)
        results.append(CLIPScore(config, share).score(with_prompts))
    return results


def _dc_ae_autoencoder(weights: str | None, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    ae = load_dc_ae(weights or "dc-ae-f32c32-sana-1.0", dtype=torch.float32, device=device)

    @torch.no_grad()
    def autoencode(x: torch.Tensor) -> torch.Tensor:  # [0, 1] -> [0, 1], as metrics.recon expects
        return ae.decode(ae.encode(x * 2 - 1)) / 2 + 0.5

    return autoencode


def _kl_autoencoder(weights: str | None, device: torch.device, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if weights is None:
        raise MetricError(f"--ae {name}: pass --weights DIR, a diffusers AutoencoderKL folder (config.json + "
                          f"safetensors), e.g. the vae/ folder of the model's diffusers repo")
    try:  # diffusers: an optional, heavy dependency, needed for these autoencoders only
        from diffusers import AutoencoderKL
    except ImportError:
        raise MetricError(f"--ae {name} needs diffusers (pip install 'sana-eval[test]' or diffusers)") from None
    vae = AutoencoderKL.from_pretrained(weights, torch_dtype=torch.float32).to(device).eval()

    @torch.no_grad()
    def autoencode(x: torch.Tensor) -> torch.Tensor:
        # The posterior mode, not a sample: reconstructions are deterministic and reruns agree.
        latents = vae.encode(x * 2 - 1).latent_dist.mode()
        return vae.decode(latents).sample / 2 + 0.5

    return autoencode


def score_recon(ae: str, weights: str | None, source: MJHQSource, *, resolution: int = 1024,
                device: str | None = None, cache_dir: str | None = None, fid_weights: str | None = None,
                allow_few_images: bool = False) -> Result:
    """Paper Table 1 for one autoencoder on the real MJHQ images: rFID, PSNR, SSIM, LPIPS."""
    if ae not in AUTOENCODERS:
        raise MetricError(f"unknown autoencoder {ae!r}; expected one of {', '.join(AUTOENCODERS)}")
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autoencode = (_dc_ae_autoencoder(weights, torch_device) if ae == "dc-ae-f32c32"
                  else _kl_autoencoder(weights, torch_device, ae))
    fid = FIDConfig(img_size=resolution, weights_path=fid_weights, device=device, cache_dir=cache_dir,
                    allow_few_images=allow_few_images)
    config = ReconConfig(resolution=resolution, device=device, fid=fid)
    result = reconstruction_metrics(autoencode, source.load(), config)
    return Result(result.metric, {**result.protocol, "autoencoder": ae, "autoencoder_weights": weights},
                  result.aggregate, result.per_item, result.provenance)


def score_geneval(images: str | Path, *, detector: str = "transformers", detector_weights: str | None = None,
                  clip_weights: str | None = None, device: str | None = None, cache_dir: str | None = None,
                  limit: int | None = None, data: str | None = None, geneval_protocol: str = "official",
                  subset: int | None = None, share: WorkShare = ONE_PROCESS) -> Result:
    """GenEval (paper Table 10) with the official rules or SANA's (`geneval_protocol`, docs/protocols.md §3.7);
    the detector backend and the protocol are recorded in the result's protocol."""
    items = get_benchmark("geneval").load(data).items
    expected = [item.metadata for item in items]
    indices = None if subset is None else subset_indices([item_category(item) for item in items], subset)
    # The folder is checked before the detector and CLIP load (seconds to minutes), so a wrong folder fails at once.
    geneval.read_folder_layout(images, limit=limit, indices=indices, expected_metadata=expected)
    return geneval.score(images, get_detector(detector, detector_weights, device),
                         get_color_classifier(clip_weights, device), cache_dir=cache_dir, limit=limit,
                         expected_metadata=expected, geneval_protocol=geneval_protocol, indices=indices,
                         share=share)


def score_dpg(images: str | Path, *, vqa: str = "mplug", vqa_weights: str | None = None, mode: str = "fixed",
              csv: str | None = None, grid: str = "exact", resolution: int | None = None,
              device: str | None = None, cache_dir: str | None = None, verify_csv: bool = True,
              subset: int | None = None, data: str | None = None, share: WorkShare = ONE_PROCESS) -> Result:
    """DPG-Bench (paper Table 11) in the `fixed` (default) or `official` (ELLA's bugs kept) mode; `verify_csv=False`
    scores a question file of one's own (its protocol says so)."""
    if not Path(images).is_dir():  # before the VQA model loads
        raise MetricError(f"DPG-Bench image folder {images} does not exist")
    return dpg.score(images, get_vqa(vqa, vqa_weights, device), mode=mode, resolution=resolution, csv_path=csv,
                     grid=grid, cache_dir=cache_dir, verify_csv=verify_csv, share=share,
                     items=None if subset is None else [it.id for it in subset_items(
                         get_benchmark("dpg").load(data).items, subset)])


def score_imagereward(images: str | Path, *, weights: str | None = None, device: str | None = None,
                      cache_dir: str | None = None, data: str | None = None, subset: int | None = None,
                      share: WorkShare = ONE_PROCESS) -> Result:
    """ImageReward benchmark (paper Table 11): mean over the 100 prompts of the mean reward of their images."""
    items = subset_items(get_benchmark("imagereward").load(data).items, subset)
    config = image_reward.ImageRewardConfig(weights_path=weights, device=device, cache_dir=cache_dir)
    return image_reward.score_benchmark(images, items, config, share)
