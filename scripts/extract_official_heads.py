"""Copy the first items of the official GenEval, ImageReward and DPG-Bench prompt files into
tests/data/official_prompt_heads.json, so the smoke chain's embedded prompts are checked against them offline.

    python scripts/extract_official_heads.py "$SANA_EVAL_DATA" tests/data/official_prompt_heads.json

The upstream pins (repository, commit, git blob sha1) are those of the data folder's SOURCE.md files.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

N_GENEVAL, N_IMAGEREWARD, DPG_ITEMS = 5, 5, ("0", "1", "2")
PINS = {
    "geneval": "djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f prompts/evaluation_metadata.jsonl "
               "(blob efc21c7e639cd45554a1e44fac87157211f16d51)",
    "imagereward": "THUDM/ImageReward@c1392c6dd0fd6ecd6d416c96959ab744a6d0a8fb benchmark/benchmark-prompts.json "
                   "(blob 24b1d4222f97110ea24317640f28795efa71165c)",
    "dpg": "TencentQQGYLab/ELLA@3c228f1dc6c4d3cad0a47493816151a419f14db3 dpg_bench/prompts/ "
           "(tree ac3ba27bf2e1c3ec189fe2e00681f75f4b78d683)",
}


def extract(data: Path) -> dict:
    geneval = (data / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()[:N_GENEVAL]
    imagereward = json.loads((data / "imagereward" / "benchmark-prompts.json").read_text())[:N_IMAGEREWARD]
    dpg = {item: (data / "dpg_bench" / "prompts" / f"{item}.txt").read_text().strip() for item in DPG_ITEMS}
    return {"sources": PINS, "geneval_lines": geneval, "imagereward_entries": imagereward, "dpg_prompts": dpg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the data folder ($SANA_EVAL_DATA) holding the official files")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        heads = extract(args.data)
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: no such file", file=sys.stderr)
        return 2
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(heads, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
