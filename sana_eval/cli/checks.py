"""The checks every `sana-eval` subcommand runs on its options before any model loads or any file is written
(issue #17): argparse `type=` functions for values (argparse names the option in the error), checks of files,
folders, devices and option combinations at the top of each run(), and a parser whose usage errors are one line
like every other error of the command."""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

import torch

from model.config import get_preset
from model.dc_ae_keys import DCAE_HUB_REPOS
from model.kernel_choice import interpreting, triton_available
from sana_eval.generation.manifest import GenerationError
from sana_eval.generation.prompt_sets import PromptSet
from sana_eval.generation.runner import parse_shard


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser with a one-line usage error (the option and what is wrong), as main() prints the others;
    the sub-parsers it creates are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _parsed(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


# --- numbers --------------------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    value = _parsed(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 1")
    return value


def non_negative_int(text: str) -> int:
    value = _parsed(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: expected an integer >= 0")
    return value


def finite_float(text: str) -> float:
    # nan and inf parse as floats, but they make black images and a manifest that is not valid JSON
    value = _parsed(text, float, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: expected a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: expected a number > 0")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected a number >= 0")
    return value


def resolution(text: str) -> int:
    """An image side in px: DC-AE's latents are 1/32 of it (docs/model.md §3)."""
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"{value}: expected a multiple of 32 px (DC-AE compresses by 32)")
    return value


def shard(text: str) -> str:
    """`i/n` with 0 <= i < n, kept as text (the runner records it so)."""
    try:
        parse_shard(text)
    except GenerationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


# --- files, folders and names on disk --------------------------------------------------------------------------
# Called through check_paths() at the top of run(), not as argparse types: the documented example commands must parse
# where their files do not exist (tests/test_cli.py), and a ValueError is one line with exit 2 for in-process callers
# of main() too (argparse would raise SystemExit).

def check_paths(args: argparse.Namespace, checks: Mapping[str, Callable[[str], object]]) -> None:
    """Each option's value (a list: each item) through its check, by label ("--images", or a positional's name),
    before any model loads or any file is written; an error names the option."""
    for label, check in checks.items():
        value = getattr(args, label.lstrip("-").replace("-", "_"))
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            try:
                check(item)
            except argparse.ArgumentTypeError as err:
                raise ValueError(f"{label} {err}") from None


def existing_path(text: str) -> str:
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text} not found (no such file or folder)")
    return text


def existing_file(text: str) -> str:
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; expected a file")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} not found (no such file)")
    return text


def existing_dir(text: str) -> str:
    if Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: is a file; expected a folder")
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} not found (no such folder)")
    return text


def _creatable(path: Path, text: str) -> None:
    """`path` can be made: its nearest existing ancestor is a writable folder."""
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is a file, so nothing can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is not writable")


def output_dir(text: str) -> str:
    """A folder to write into: absent (made later) or a folder, under a writable one."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; expected a folder")
    _creatable(path, text)
    return text


def output_file(text: str) -> str:
    """A file to write (replaced atomically if it exists), not a folder, under a writable folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; expected a file name")
    _creatable(path.parent, text)
    return text


def new_path(text: str) -> str:
    """A file or folder that does not exist yet (never overwritten), under a writable folder."""
    path = Path(text)
    if path.exists():
        raise argparse.ArgumentTypeError(f"{text}: exists; give a new path (nothing is overwritten)")
    _creatable(path.parent, text)
    return text


def transformer_weights(text: str) -> str:
    """A checkpoint on disk or a transformer preset name (random weights)."""
    if not Path(text).exists():
        try:
            get_preset(text)
        except KeyError as err:
            raise argparse.ArgumentTypeError(f"{text}: no such file or folder, and {err.args[0]}") from None
    return text


def vae(text: str) -> str:
    """A DC-AE folder or file on disk, or a preset name the hub serves."""
    if not Path(text).exists() and text not in DCAE_HUB_REPOS:
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder, and not a DC-AE preset "
                                         f"({', '.join(DCAE_HUB_REPOS)})")
    return text


def path_or_repo_id(text: str) -> str:
    """A file or folder, or a Hugging Face repo id (owner/name, looked up when loaded); a local path must exist."""
    local = text.startswith(("/", ".", "~")) or text.count("/") != 1
    if local and not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder (nor a Hugging Face repo id owner/name)")
    return text


# --- names and devices: argparse types ----------------------------------------------------------------------------

def preset(text: str) -> str:
    """A transformer preset name (model/config.py), with "did you mean" for a typo."""
    try:
        get_preset(text)
    except KeyError as err:
        raise argparse.ArgumentTypeError(err.args[0]) from None
    return text


def path_component(text: str) -> str:
    """A name that becomes one folder: no separator, not . or .."""
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a plain name (no '/', not '.' or '..')")
    return text


def device(text: str) -> str:
    """cpu, cuda or cuda:N, refused where this machine has no such device."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available on this machine (use cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return text


def _on_cuda(requested: str | None) -> bool:
    """Whether a run asked for `requested` (None: the default) computes on a CUDA device."""
    return torch.device(requested).type == "cuda" if requested else torch.cuda.is_available()


def check_kernels(requested_device: str | None, kernels: str, cuda_graphs: str = "off") -> None:
    """--kernels triton and --cuda-graphs on where they cannot run, refused before a model loads."""
    cuda = _on_cuda(requested_device)
    if kernels == "triton" and not (triton_available() and (cuda or interpreting())):
        raise ValueError("--kernels triton: the fused kernels need a CUDA device and the triton package "
                         f"({'this run is on the CPU' if not cuda else 'triton is not installed'}); use --kernels "
                         "eager or auto")
    if cuda_graphs == "on" and not cuda:
        raise ValueError("--cuda-graphs on: CUDA graphs need a CUDA device and this run is on the CPU; use "
                         "--cuda-graphs auto or off")


def require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise ValueError(f"{what} times on a CUDA GPU and none is available on this machine")


# --- prompt sets ----------------------------------------------------------------------------------------------

def check_prompts(prompts: PromptSet, benchmark: str, limit: int | None) -> None:
    """A prompt set with prompts to generate: an empty file or a --limit past its end would do less than asked."""
    if not prompts.items:
        raise ValueError(f"--benchmark {benchmark}: {prompts.origin} holds no prompts")
    if limit is not None and limit > len(prompts.items):
        raise ValueError(f"--limit {limit}: {prompts.origin} holds only {len(prompts.items)} prompts")


# `sana-eval score`'s files and folders (kept here: score.py's run() is shared with the distributed scoring work).
SCORE_PATHS = {"--out": output_file, "--cache-dir": output_dir, "--images": existing_dir, "--data": existing_path,
               "--mjhq": existing_dir, "--reference": existing_dir, "--prompts": existing_file,
               "--dpg-csv": existing_file, "--weights": vae, "--fid-weights": existing_file,
               "--clip-weights": existing_file, "--detector-weights": path_or_repo_id,
               "--vqa-weights": path_or_repo_id}
