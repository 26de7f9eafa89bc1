"""DPG-Bench's official VQA (docs/protocols.md §4.2): ModelScope mPLUG-large, used only if `modelscope` imports."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from metrics.base import MetricError, package_versions, sha256_file
from metrics.vqa.base import VQA

MPLUG_MODEL = "damo/mplug_visual-question-answering_coco_large_en"
WEIGHTS_FILE = "pytorch_model.bin"  # ModelScope's ModelFile.TORCH_MODEL_BIN_FILE, the one file MPlug loads
# Sub-modules that MPlugForVisualQuestionAnswering reads at inference (ViT, text encoder, fusion, beam-search
# decoder); the CLIP text tower and the `*_m` momentum copies are training-only.
INFERENCE_MODULES = ("visual_encoder.visual.", "visn_fc.", "visn_layer_norm.", "text_encoder.", "fusion_encoder.",
                     "text_decoder.")


def modelscope_available() -> bool:
    try:
        importlib.import_module("modelscope")
    except ImportError:
        return False
    return True


class MPLUGVQA(VQA):
    name = "ModelScope mPLUG-large VQA (official DPG-Bench scorer)"

    def __init__(self, model: str = MPLUG_MODEL, device: str = "gpu"):
        """`model`: the ModelScope id (downloaded into ModelScope's cache on first use) or a local model folder
        (configuration.json, config.yaml, its BERT json, vocab.txt, pytorch_model.bin).

        `device`: ModelScope's spelling: "gpu" (falls back to CPU without CUDA), "cuda:N" or "cpu".
        """
        if not modelscope_available():
            raise MetricError("the mPLUG backend needs `modelscope[multi-modal]` (docs/protocols.md §4.4-4.5); "
                              "use the BLIP backend otherwise")
        if (Path(model).is_absolute() or model.startswith(".")) and not Path(model).is_dir():
            raise MetricError(f"mPLUG model folder {model} does not exist")
        # optional: modelscope lives in its own environment (docs/protocols.md §4.4)
        from modelscope.models.multi_modal import MPlugForAllTasks
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks
        try:
            self.pipeline = pipeline(Tasks.visual_question_answering, model=model, device=device)
        except Exception as err:  # hub, config and import failures surface as many exception types
            raise MetricError(f"ModelScope could not build the VQA pipeline for {model!r}: "
                              f"{type(err).__name__}: {_first_line(err)}") from None
        if not isinstance(self.pipeline.model, MPlugForAllTasks):
            raise MetricError(f"{model!r} is a {type(self.pipeline.model).__name__}, not an mPLUG VQA model")
        self.model = model
        weights = Path(self.pipeline.model.model_dir) / WEIGHTS_FILE
        _check_loaded(self.pipeline.model.model, weights)
        self.weights = {"source": model, "file": WEIGHTS_FILE, "sha256": sha256_file(weights)}

    @property
    def protocol(self) -> dict[str, Any]:
        net = self.pipeline.model.model
        beam = net.beam_generator
        return {"backend": "modelscope-mplug", "official": True, "model": self.model, "weights": self.weights,
                "decoding": {"beam_size": beam.beam_size, "min_length": beam.min_length,
                             "max_length": beam.max_length, "image_res": net.config.image_res,
                             "question_max_tokens": self.pipeline.preprocessor.tokenizer_max_length,
                             "dtype": str(next(net.parameters()).dtype).removeprefix("torch.")},
                "versions": package_versions("modelscope", "torch", "transformers")}

    def answer(self, image: Image.Image, question: str) -> str:
        from modelscope.outputs import OutputKeys  # optional: modelscope lives in its own environment
        return self.pipeline({"image": image, "question": question})[OutputKeys.TEXT]


def _check_loaded(net: torch.nn.Module, weights: Path) -> None:
    """Fail if ModelScope's non-strict load (MPlug.from_pretrained) left an inference parameter at random init."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable or unsafe pickles
        raise MetricError(f"{weights}: not a readable torch checkpoint ({_first_line(err)})") from None
    # MPlug.from_pretrained's own unwrapping and renaming, so the key sets are the ones it compared.
    state = state.get("model", state)
    state = state.get("module", state)
    loaded = {key.replace("model.", "") for key in state}
    missing = [name for name, _ in net.named_parameters() if name.startswith(INFERENCE_MODULES) and name not in loaded]
    if missing:
        raise MetricError(f"{weights}: {len(missing)} inference parameters missing (e.g. {missing[0]}); "
                          "ModelScope would have left them random")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__
