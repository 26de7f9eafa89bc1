"""Forwards replayed from CUDA graphs: the denoiser's and Gemma-2's (model/text_encoder.py).

At batch 1 a forward is launch-bound: Sana-0.6B at 1024 px runs 11 ms of kernels in a 22 ms step on an H100
(reports/2026-11-26-229fbe0-h100-kernels), and Gemma-2-2B's text phase (a 498- and a 300-token row) takes 57 ms
eagerly and 21 ms replayed on an H200 (docs/model.md §4.6), because Python cannot issue the hundreds of launches
faster. A forward is recorded once per input signature and replayed as one launch. A replay runs the recorded
kernels on the recorded buffers, so its output is bit-identical to the eager call's (tests/test_cuda_graph.py and
tests/test_text_encoder.py, on a GPU).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

CudaGraphs = Literal["auto", "on", "off"]
# "auto" records graphs up to this many image tokens per forward (batch x tokens, CFG rows included): above it a
# step is compute-bound, and a graph's private memory pool would keep that forward's activations allocated.
AUTO_MAX_TOKENS = 4 * 4096


def graphs_wanted(mode: CudaGraphs, recordable: bool, small: bool, needs: str) -> bool:
    """The one policy of every graphed forward: "off" never, "on" always (an error naming what it `needs` where the
    forward is not `recordable`), "auto" where it is recordable and `small` enough to be launch-bound."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"cuda_graphs={mode!r}; expected 'auto', 'on' or 'off'")
    if mode == "off":
        return False
    if mode == "on":
        if not recordable:
            raise RuntimeError(f"cuda_graphs='on' needs {needs}; use 'auto' or 'off'")
        return True
    return recordable and small


def use_graphs(mode: CudaGraphs, model: nn.Module, latent: torch.Tensor) -> bool:
    """Whether `mode` records the denoiser `model`'s forward on `latent` (B, C, H, W)."""
    # exact cross-attention masking validates the mask on the host, which a recording stream forbids
    recordable = latent.device.type == "cuda" and model.config.cross_attn_mask != "exact"
    p = model.config.patch_size
    small = latent.shape[0] * (latent.shape[-2] // p) * (latent.shape[-1] // p) <= AUTO_MAX_TOKENS
    return graphs_wanted(mode, recordable, small, "CUDA tensors and cross_attn_mask other than 'exact'")


@dataclass
class _Recorded:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    output: torch.Tensor


class GraphedModule:
    """Calls `model(*tensors, **options)`, any module returning one tensor, through one recorded CUDA graph per
    input signature (shapes, dtypes, options); keeps at most `max_graphs`, dropping the least recently used (each
    holds its forward's memory). The forward must not read tensors on the host (`.item()`, `if t.any()`).

    A replay reads the weights at the addresses it recorded: after moving or replacing the model's tensors (.to(),
    load_state_dict(assign=True)) call `forget_if_weights_moved()`, as SanaPipeline and TextEncoder do on every
    call."""

    def __init__(self, model: nn.Module, max_graphs: int = 2, warmup: int = 2):
        self.model, self.max_graphs, self.warmup = model, max_graphs, warmup
        self._recorded: OrderedDict[tuple, _Recorded] = OrderedDict()
        self._addresses = self._weight_addresses()

    def _weight_addresses(self) -> tuple[int, ...]:
        return tuple(t.data_ptr() for t in (*self.model.parameters(), *self.model.buffers()))

    def forget_if_weights_moved(self) -> None:
        addresses = self._weight_addresses()
        if addresses != self._addresses:
            self._recorded.clear()
            self._addresses = addresses

    def __call__(self, *tensors: torch.Tensor, **options) -> torch.Tensor:
        key = (tuple((t.shape, t.dtype, t.device) for t in tensors), tuple(sorted(options.items())))
        recorded = self._recorded.get(key)
        if recorded is None:
            recorded = self._record(tensors, options)
            self._recorded[key] = recorded
            while len(self._recorded) > self.max_graphs:
                self._recorded.popitem(last=False)
        self._recorded.move_to_end(key)
        for buffer, t in zip(recorded.inputs, tensors):
            buffer.copy_(t)
        recorded.graph.replay()
        return recorded.output.clone()  # the next replay overwrites the output buffer; callers keep old outputs

    @torch.no_grad()
    def _record(self, tensors: tuple[torch.Tensor, ...], options: dict) -> _Recorded:
        inputs = [t.clone() for t in tensors]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # first calls compile Triton kernels and pick cuBLAS algorithms
            for _ in range(self.warmup):
                self.model(*inputs, **options)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.model(*inputs, **options)
        return _Recorded(graph, inputs, output)
