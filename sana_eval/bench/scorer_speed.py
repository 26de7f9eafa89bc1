"""The scoring networks of a quality row, each built from its official configuration with random weights and timed
through the path its scorer runs per image (file decoding, preprocessing, forward at the scorer's batch size) on
synthetic files in the benchmark's format; `sana-eval bench suite evaluate` (sana_eval/bench/evaluate_cost.py)
turns these rates into the row's time."""
from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

from metrics.clip_score import CLIPScore, CLIPScoreConfig
from metrics.detectors.base import OBJECT_NAMES
from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF
from metrics.detectors.mmdet_convert import Mask2FormerShape, hf_config
from metrics.fid import FIDConfig, InceptionEncoder, fid_transform
from metrics.image_reward import ImageRewardConfig, ImageRewardScore
from metrics.image_reward_model import RewardArch
from metrics.images import ImageItem, ImageSet, extract_features
from metrics.vqa.blip import BlipVQA
from sana_eval.bench.clock import device_name, free_memory
from sana_eval.bench.fid_features import random_fid_inception, write_images
from sana_eval.bench.records import run_case
from sana_eval.smoke.tiny import random_image_reward_weights

RESOLUTION = 1024                          # the generated images' side the scorers read

# GenEval's detector: mmdet's mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco (the official checkpoint's config), as
# metrics/detectors/mmdet_convert.py converts it (tests/test_detector_mmdet.py checks these numbers against it).
GENEVAL_MASK2FORMER = Mask2FormerShape(
    embed_dim=96, depths=(2, 2, 18, 2), swin_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0, feature_size=256,
    mask_feature_size=256, encoder_layers=6, encoder_feedforward_dim=1024, decoder_layers=9, dim_feedforward=2048,
    num_queries=100, num_labels=len(OBJECT_NAMES), attention_heads=8)


@dataclass(frozen=True)
class BlipVQASize:
    """BLIP VQA's towers; defaults: Salesforce/blip-vqa-base (ViT-B/16 at 384 px, BERT-base text with 12 heads)."""

    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    image_size: int = 384
    patch_size: int = 16
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    vocab_size: int = 30524                # bert-base-uncased 30522 + [DEC] + [ENC]
    max_new_tokens: int = 10               # BlipVQA's greedy decoding limit


@dataclass(frozen=True)
class ScorerSizes:
    """The scoring networks and how much synthetic input each is timed on; defaults are the official networks."""

    image_px: int = RESOLUTION             # side of the synthetic generated images (DPG grids: twice that)
    images: int = 200                      # files timed through FID, CLIP score and ImageReward
    detector_images: int = 12
    vqa_grids: int = 2                     # DPG grids: 4 tiles each, `vqa_questions` questions per tile
    vqa_questions: int = 4
    clip_model: str = "ViT-L-14"           # open_clip config (OpenAI CLIP ViT-L/14, §2.1)
    clip_pretrained: str | None = "openai"  # the tag whose architecture options apply (QuickGELU); weights random
    clip_config: Mapping | None = None     # an open_clip config to register as `clip_model` (tiny CLIP)
    fid: FIDConfig = FIDConfig()
    fid_resize: bool = True                # pytorch-fid's resize to 299 px inside the network (off: tiny inputs)
    detector: Mask2FormerShape = GENEVAL_MASK2FORMER
    detector_config: Mask2FormerConfig = Mask2FormerConfig()
    vqa: BlipVQASize = BlipVQASize()
    reward: RewardArch = RewardArch()
    workers: int | None = None             # DataLoader workers; None: each scorer's default


OFFICIAL_SIZES = ScorerSizes()


# ----------------------------------------------------------------------------------------------
# The scoring networks, each through its scorer's per-image path.

@dataclass(frozen=True)
class ScorerTiming:
    scorer: str                     # a key of evaluate_row.ROW_SCORING
    network: str                    # what was built, and from which configuration
    params: int
    unit: str                       # "image" or "question"
    batch: int                      # the scorer's batch size (1: one image or question per call)
    workers: int                    # DataLoader workers decoding files (0: in the main process)
    units: int                      # timed, after a warm-up
    seconds: float
    per_s: float
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _timed(run: Callable[[Sequence], object], inputs: Sequence, warm: int, device: torch.device) -> float:
    """Wall seconds of `run(inputs)` after `run(inputs[:warm])` (kernel selection, allocator, worker start-up).
    Wall time, not device events: file decoding and preprocessing on the host are part of what is timed."""
    run(inputs[:warm])
    start = time.perf_counter()
    run(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def write_bert_vocab(path: Path, size: int) -> Path:
    """A BERT-style vocab.txt of `size` tokens ([PAD] first, the specials, some words, filler), for the BLIP and
    ImageReward tokenizers; words outside it become [UNK], which leaves the sequence lengths as they are."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "is", "are", "there", "a", "the", "of", "on",
             "in", "photo", "red", "green", "cat", "dog", "table", "?", ",", "."]
    tokens = (words + [f"tok{i}" for i in range(size)])[:size]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tokens) + "\n")
    return path


def time_fid(paths: Sequence[Path], device: torch.device, sizes: ScorerSizes) -> ScorerTiming:
    """pytorch-fid's InceptionV3 (random init) on MJHQ-layout JPEGs through Sana's resize/crop (metrics/fid.py)."""
    config, workers = sizes.fid, sizes.fid.num_workers if sizes.workers is None else sizes.workers
    encoder = InceptionEncoder(random_fid_inception(sizes.fid_resize), device)
    transform = fid_transform(config.img_size)

    def run(files: Sequence[Path]) -> None:
        extract_features(list(files), transform, encoder, None, batch_size=config.batch_size, num_workers=workers,
                         desc="FID features (bench)", pin_memory=device.type == "cuda")

    seconds = _timed(run, paths, config.batch_size, device)
    return ScorerTiming("fid", f"pytorch-fid InceptionV3 pool3 (random init), Sana's resize {config.img_size}"
                        f"{', then 299' if sizes.fid_resize else ''}",
                        _params(encoder.model), "image", config.batch_size, workers, len(paths), seconds,
                        len(paths) / seconds, device_name(device))


def write_random_clip(path: Path, model_name: str, device: torch.device) -> Path:
    """Random weights of an open_clip architecture as a safetensors file CLIPScore loads (fp16: half the bytes)."""
    import open_clip  # optional and heavy: only the CLIP timing needs it

    torch.manual_seed(0)
    model = open_clip.create_model(model_name, pretrained=None, device=device)
    state = {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    del model
    free_memory(device)
    save_file(state, str(path))
    return path


def time_clip_score(paths: Sequence[Path], device: torch.device, sizes: ScorerSizes, folder: Path) -> ScorerTiming:
    """CLIPScore (metrics/clip_score.py: fp16 on CUDA, its batch and workers) with random OpenAI ViT-L/14 weights."""
    import open_clip  # optional and heavy: only the CLIP timing needs it

    folder.mkdir(parents=True, exist_ok=True)
    if sizes.clip_config is not None:
        config_file = folder / f"{sizes.clip_model}.json"
        config_file.write_text(json.dumps(sizes.clip_config))
        open_clip.add_model_config(config_file)
    weights = write_random_clip(folder / "clip.safetensors", sizes.clip_model, device)
    workers = CLIPScoreConfig().num_workers if sizes.workers is None else sizes.workers
    config = CLIPScoreConfig(model=sizes.clip_model, pretrained=sizes.clip_pretrained, weights_path=str(weights),
                             device=str(device), num_workers=workers)
    metric = CLIPScore(config)
    items = tuple(ImageItem(p.stem, p, prompt=f"a photo of a red cat number {i}") for i, p in enumerate(paths))

    def run(subset: Sequence[ImageItem]) -> None:
        metric.score(ImageSet("synthetic", "bench", tuple(subset)))

    seconds = _timed(run, items, config.batch_size, device)
    return ScorerTiming("clip_score", f"open_clip {sizes.clip_model} ({sizes.clip_pretrained or 'no'} tag options, "
                        f"random weights), {metric.precision}, image + prompt towers", _params(metric.model), "image",
                        config.batch_size, workers, len(items), seconds, len(items) / seconds, device_name(device))


def time_detector(paths: Sequence[Path], device: torch.device, sizes: ScorerSizes) -> ScorerTiming:
    """GenEval's Mask2Former Swin-S (its official config, random weights) through `Mask2FormerHF.detect`: mmdet's
    resize and padding, the forward, the top-100 masks at image size; one image per call, as metrics/geneval.py."""
    from transformers import Mask2FormerForUniversalSegmentation  # heavy: only the detector timing needs it

    torch.manual_seed(0)
    with device:  # initialised where it runs: a CPU init of the full network takes seconds
        model = Mask2FormerForUniversalSegmentation(hf_config(sizes.detector, list(OBJECT_NAMES)))
    detector = Mask2FormerHF(config=replace(sizes.detector_config, device=str(device)), model=model)

    def run(files: Sequence[Path]) -> None:
        for path in files:
            with Image.open(path) as im:
                detector.detect(ImageOps.exif_transpose(im).convert("RGB"))

    seconds = _timed(run, paths, 1, device)
    shape = sizes.detector
    return ScorerTiming("geneval_detector", f"Mask2Former Swin (embed {shape.embed_dim}, depths {list(shape.depths)}, "
                        f"window {shape.window_size}, {shape.num_queries} queries; random weights), "
                        f"{sizes.detector_config.dtype}", _params(detector.model), "image", 1, 0, len(paths), seconds,
                        len(paths) / seconds, device_name(device))


def build_blip_vqa(size: BlipVQASize, folder: Path, device: torch.device) -> BlipVQA:
    """BlipVQA (metrics/vqa/blip.py) around a random BlipForQuestionAnswering of `size` and its processor."""
    # heavy: only the VQA timing builds BLIP
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    vocab = write_bert_vocab(folder / "vocab.txt", size.vocab_size - 2)
    tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]")
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    processor = BlipProcessor(BlipImageProcessor(size={"height": size.image_size, "width": size.image_size}),
                              tokenizer)
    text = dict(vocab_size=size.vocab_size, hidden_size=size.text_width, intermediate_size=4 * size.text_width,
                num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
                encoder_hidden_size=size.vision_width, bos_token_id=tokenizer.bos_token_id,
                pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id)
    vision = dict(hidden_size=size.vision_width, intermediate_size=4 * size.vision_width,
                  num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
                  image_size=size.image_size, patch_size=size.patch_size)
    torch.manual_seed(0)
    with device:  # initialised where it runs: a CPU init of the full network takes seconds
        model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).eval()
    return BlipVQA(device=str(device), max_new_tokens=size.max_new_tokens, model=model, processor=processor)


def time_vqa(grids: Sequence[Path], device: torch.device, sizes: ScorerSizes, folder: Path) -> ScorerTiming:
    """DPG's VQA as metrics/dpg.py asks it: each 2x2 grid cut into tiles, every question of the prompt put to
    every tile, one `answer` call each (BLIP VQA, greedy, up to `max_new_tokens`)."""
    vqa = build_blip_vqa(sizes.vqa, folder, device)
    questions = [f"is there a red cat number {k}?" for k in range(sizes.vqa_questions)]

    def run(files: Sequence[Path]) -> None:
        for path in files:
            with Image.open(path) as im:
                grid = im.convert("RGB")
            side = grid.width // 2
            for y in (0, side):
                for x in (0, side):
                    tile = grid.crop((x, y, x + side, y + side))
                    for q in questions:
                        vqa.answer(tile, q)

    seconds = _timed(run, grids, 1, device)
    units = len(grids) * 4 * len(questions)
    size = sizes.vqa
    official = "blip-vqa-base config, " if size == BlipVQASize() else ""
    return ScorerTiming("dpg_vqa", f"BLIP VQA (vision {size.vision_layers}x{size.vision_width} at {size.image_size} "
                        f"px, text {size.text_layers}x{size.text_width}; {official}random weights), "
                        f"fp32, max_new_tokens {vqa.max_new_tokens}", _params(vqa.model), "question", 1, 0, units,
                        seconds, units / seconds, device_name(device))


def time_image_reward(paths: Sequence[Path], device: torch.device, sizes: ScorerSizes, folder: Path) -> ScorerTiming:
    """ImageRewardScore (metrics/image_reward.py: fp32, its batch and workers) on random official-layout weights."""
    arch = sizes.reward
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "ImageReward.safetensors"
    save_file(random_image_reward_weights(arch), str(weights))
    write_bert_vocab(folder / "vocab.txt", arch.vocab_size - 2)
    med = {"hidden_size": arch.text_width, "num_hidden_layers": arch.text_depth,
           "num_attention_heads": arch.text_heads, "intermediate_size": arch.text_intermediate,
           "vocab_size": arch.vocab_size, "max_position_embeddings": arch.max_positions,
           "layer_norm_eps": arch.text_eps, "hidden_act": "gelu", "add_cross_attention": True,
           "encoder_width": arch.vision_width}
    (folder / "med_config.json").write_text(json.dumps(med))
    workers = ImageRewardConfig().num_workers if sizes.workers is None else sizes.workers
    config = ImageRewardConfig(weights_path=str(weights), med_config_path=str(folder / "med_config.json"),
                               tokenizer_path=str(folder), download=False, device=str(device), num_workers=workers)
    metric = ImageRewardScore(config, arch)
    items = tuple(ImageItem(p.stem, p, category=str(i // 10), prompt=f"a photo of a red cat number {i // 10}")
                  for i, p in enumerate(paths))

    def run(subset: Sequence[ImageItem]) -> None:
        metric.score(ImageSet("synthetic", "bench", tuple(subset)), by_prompt=True)

    seconds = _timed(run, items, config.batch_size, device)
    return ScorerTiming("image_reward", f"ImageReward-v1.0 (BLIP ViT {arch.vision_depth}x{arch.vision_width} at "
                        f"{arch.image_size} px + BERT {arch.text_depth}x{arch.text_width}; random weights), "
                        f"{config.precision}", _params(metric.model), "image", config.batch_size, workers, len(items),
                        seconds, len(items) / seconds, device_name(device))


def time_scorers(device: torch.device, sizes: ScorerSizes, folder: Path) -> list[dict]:
    """One record per scoring network: its timing, or why it was skipped or failed."""
    jpegs = folder / "jpeg"
    pngs = folder / "png"
    grids = folder / "grids"
    for f in (jpegs, pngs, grids):
        f.mkdir(parents=True, exist_ok=True)
    files = write_images(jpegs, sizes.images, sizes.image_px)
    detector_files = write_images(pngs, sizes.detector_images, sizes.image_px, "png")
    grid_files = write_images(grids, sizes.vqa_grids, 2 * sizes.image_px, "png")
    records = [_scorer_case("fid", lambda: time_fid(files, device, sizes))]
    if importlib.util.find_spec("open_clip") is None:
        records.append({"scorer": "clip_score", "skipped": "open_clip_torch is not installed (pip install "
                                                            "open_clip_torch, or carry its wheel)"})
    else:
        records.append(_scorer_case("clip_score", lambda: time_clip_score(files, device, sizes, folder / "clip")))
    records.append(_scorer_case("geneval_detector", lambda: time_detector(detector_files, device, sizes)))
    records.append(_scorer_case("dpg_vqa", lambda: time_vqa(grid_files, device, sizes, folder / "blip")))
    records.append(_scorer_case("image_reward",
                                lambda: time_image_reward(files, device, sizes, folder / "reward")))
    free_memory(device)
    return records


def _scorer_case(scorer: str, measure: Callable[[], ScorerTiming]) -> dict:
    """run_case's record, or a skip where an optional package of the scorer is missing or broken (the other scorers
    still run)."""
    try:
        return {"scorer": scorer, **run_case(measure)}
    except (ImportError, OSError) as err:
        return {"scorer": scorer, "skipped": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"}
