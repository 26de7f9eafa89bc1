"""Tables 8 and 12: the block design space from DiT/PixArt to Sana, efficiency and quality."""
from __future__ import annotations

from . import columns as C
from .schema import Column, Note, RowSpec, Tolerance, build_table

F8, F32 = "F8C4P2", "F32C32P1"
VARIANT = ("block-design variant (full attention, plain FFN, F8C4P2 autoencoder or Triton fusion) that this repo "
           "does not implement; the model size behind the table is not stated (paper.md §2)")
TRAINED = ("needs each variant trained for 52K iterations with the same (undisclosed) setting; "
           "training is out of scope (paper.md §4)")

# Table 8 [P]: one A100, FP16, 1024 px; MACs of one forward pass, throughput at batch 16, latency at batch 1.
TABLE8 = build_table(
    id="table8", number=8, title="Efficiency of the block design space",
    caption="One A100, FP16, 1024 px. MACs for a single forward pass; throughput at batch 16; latency at batch 1.",
    source="P",
    columns=(Column("macs", "MACs (T)", "T", False, Tolerance("rel", 0.02, why="MAC counting conventions")),
             C.throughput("TP (/s)"), C.latency("ms", "Latency (ms)")),
    rows=[RowSpec(label, group, tuple(values.split()), no_recipe=VARIANT) for group, label, values in (
        (F8, "FullAttn & FFN", "6.48 0.49 2250"),
        (F8, "+ LinearAttn", "4.30 0.52 1931"),
        (F8, "+ MixFFN", "4.19 0.46 2425"),
        (F8, "+ Kernel Fusion", "4.19 0.53 2139"),
        (F32, "LinearAttn & MixFFN", "1.08 1.75 826"),
        (F32, "+ Kernel Fusion", "1.08 2.06 748"),
    )],
    notes=(Note("paper.md §2", "Neither the step count behind the latency nor the model size is stated."),),
)

# Table 12 [P]: "We train all the models with the same training setting with 52K iterations."
TABLE12 = build_table(
    id="table12", number=12, title="Quality of the block design space",
    caption="All models trained with the same setting for 52K iterations.", source="P",
    columns=(C.fid(), C.clip()),
    rows=[RowSpec(label, group, tuple(values.split()), no_recipe=TRAINED) for group, label, values in (
        (f"{F8}, 256 px", "FullAttn & FFN", "18.7 24.9"),
        (f"{F8}, 256 px", "+ Linear", "21.5 23.3"),
        (f"{F8}, 256 px", "+ MixFFN", "18.9 24.8"),
        (f"{F8}, 256 px", "+ Kernel Fusion", "18.8 24.8"),
        (f"{F32}, 512 px", "Linear+GLUMBConv2.5", "6.4 27.4"),
        (f"{F32}, 512 px", "+ Kernel Fusion", "6.4 27.4"),
    )],
    notes=(Note("paper.md §1", "NoPE has no table; the paper only says removing the positional embedding gives "
                               "no quality loss."),),
)
