"""Tables 1–4: autoencoder reconstruction and the training ablations (CHI, flow matching, caption sampler)."""
from __future__ import annotations

from sana_eval.tables import columns as C
from sana_eval.tables import recipes as R
from sana_eval.tables.schema import Column, Note, RowSpec, Tolerance, build_table

TRAINING = ("training ablation: needs Sana variants trained from scratch; the paper does not disclose data, "
            "batch size, learning rate or compute (docs/tables.md §4)")
SD_F32C64 = ("the paper does not say which SD autoencoder is F32C64 (its footnote is not rendered); run "
             "`sana-eval score --benchmark recon --ae sd-f32c64 --weights DIR` once it is identified")
UNVERIFIED = Note("docs/tables.md §0, §7", "Rendered as an image in the HTML; the numbers come from two third-party "
                                     "transcriptions of the PDF that agree with each other. Unverified.")

# Table 1 [P]: "Reconstruction capability of different Autoencoders."
TABLE1 = build_table(
    id="table1", number=1, title="Reconstruction capability of different Autoencoders",
    caption="AE reconstruction on MJHQ-30K; the evaluation resolution is not stated.", source="P",
    columns=(Column("rfid", "rFID", "", False, Tolerance("abs", 0.05, why="rFID of a deterministic round trip")),
             Column("psnr", "PSNR", "dB", True, Tolerance("abs", 0.3, why="resize and JPEG decode differences")),
             Column("ssim", "SSIM", "", True, Tolerance("abs", 0.01, why="printed to two decimals")),
             Column("lpips", "LPIPS", "", False, Tolerance("abs", 0.01, why="printed to two decimals"))),
    rows=[
        RowSpec("F8C4 (SDXL)", "", ("0.31", "31.41", "0.88", "0.04"),
                recipes={m: R.reconstruction(R.SDXL_VAE, m) for m in ("rfid", "psnr", "ssim", "lpips")}),
        RowSpec("F32C64 (SD)", "", ("0.82", "27.17", "0.79", "0.09"), no_recipe=SD_F32C64),
        RowSpec("F32C32 (Ours)", "", ("0.34", "29.29", "0.84", "0.05"),
                recipes={m: R.reconstruction(R.VAE, m) for m in ("rfid", "psnr", "ssim", "lpips")}),
    ],
    notes=(Note("docs/tables.md §7", "Resolution and number of images behind the reconstruction metrics are not "
                               "stated; the footnotes ¹ ² of the first two rows are not rendered in the HTML.",
                (("F32C32 (Ours)", "rfid"), ("F32C32 (Ours)", "psnr"), ("F32C32 (Ours)", "ssim"),
                 ("F32C32 (Ours)", "lpips"))),
           Note("docs/tables.md §6.14", "A third-party page labels these numbers ImageNet; the paper says MJHQ-30K.")),
)

# Table 2 [P-img]: "Ablation study of whether using Complex Human Instruction (CHI)"; GenEval in percent.
TABLE2 = build_table(
    id="table2", number=2, title="Ablation study of whether using Complex Human Instruction (CHI)",
    caption="GenEval (percent) with and without the CHI prefix, grouped by training step.", source="P-img",
    columns=(Column("geneval", "GenEval", "%", True, Tolerance("abs", 2.0, why="GenEval percent, 553 prompts")),),
    rows=[
        RowSpec("User", "52K", ("45.5",), no_recipe=TRAINING),
        RowSpec("CHI + User", "52K", ("47.7",), no_recipe=TRAINING),
        RowSpec("User", "140K", ("52.8",), no_recipe=TRAINING),
        RowSpec("CHI + User (+5K finetune)", "145K", ("54.8",), no_recipe=TRAINING),
    ],
    notes=(UNVERIFIED,),
)

# Table 3 [P-img]: DDPM vs. flow matching as the training schedule (256 px per the notes).
TABLE3 = build_table(
    id="table3", number=3, title="DDPM vs. flow matching as the training schedule",
    caption="FID and CLIP after 120K iterations (256 px per the transcriptions).", source="P-img",
    columns=(C.fid(), C.clip()),
    rows=[
        RowSpec("DDPM", "120K", ("19.5", "24.6"), no_recipe=TRAINING),
        RowSpec("Flow Matching", "120K", ("16.9", "25.7"), no_recipe=TRAINING),
    ],
    notes=(UNVERIFIED,),
)

# Table 4 [P-img]: caption sampling strategy (one transcription says 65K steps).
TABLE4 = build_table(
    id="table4", number=4, title="Caption sampling strategy",
    caption="Single caption vs. multiple VLM captions, sampled at random or by CLIP score.", source="P-img",
    columns=(C.fid(), C.clip()),
    rows=[
        RowSpec("Single caption", "", ("6.13", "27.10"), no_recipe=TRAINING),
        RowSpec("Multi-caption, random", "", ("6.15", "27.13"), no_recipe=TRAINING),
        RowSpec("Multi-caption, CLIP-score sampler", "", ("6.12", "27.26"), no_recipe=TRAINING),
    ],
    notes=(UNVERIFIED,),
)
