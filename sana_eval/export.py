"""Prompt sets and per-item scores as 🤗 `datasets` (`sana-eval export --to datasets DIR`), so users can
`push_to_hub` them or join them with their own data: one `DatasetDict` saved with `save_to_disk`, split "prompts"
(a benchmark's items) and/or "scores" (results bundles' per-item numbers), and `export.json` beside them naming
every input, its sha256 and the protocols (the rows carry `protocol_id`), with the run's provenance.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metrics.base import protocol_id, sha256_file
from sana_eval.generation.prompt_sets import PromptSet
from sana_eval.io import write_text
from sana_eval.provenance import collect
from sana_eval.results import per_item_frame, read_results

EXPORT_SCHEMA = "sana-eval/export/1"


class ExportError(ValueError):
    """An export that cannot be made; the message is one line naming the folder or option."""


def prompts_frame(prompt_set: PromptSet) -> pd.DataFrame:
    """One row per item: benchmark, id, prompt, n_images, and its metadata as JSON (its shape varies per item)."""
    return pd.DataFrame([{"benchmark": prompt_set.benchmark.name, "id": it.id, "prompt": it.prompt,
                          "n_images": it.n_images, "metadata": json.dumps(it.metadata, sort_keys=True)}
                         for it in prompt_set.items], columns=["benchmark", "id", "prompt", "n_images", "metadata"])


def scores_frame(bundles: Sequence[str | Path]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """(per-item numbers of every bundle, long, with protocol_id; protocol_id -> protocol)."""
    frames, protocols = [], {}
    for path in bundles:
        results = read_results(path)
        ids = {m: protocol_id(r.protocol) for m, r in results.items()}
        protocols.update({ids[m]: dict(r.protocol) for m, r in results.items()})
        frame = per_item_frame(results, str(path))
        frames.append(frame.assign(protocol_id=frame["metric"].map(ids)))
    return pd.concat(frames, ignore_index=True), protocols


def export_datasets(out: str | Path, *, prompts: PromptSet | None = None, results: Sequence[str | Path] = ()
                    ) -> Path:
    """`out/` as `datasets.DatasetDict.save_to_disk` writes it, plus `export.json`; made in a temporary folder
    beside `out` and renamed into place, so `out` is whole or absent. An existing non-empty `out` is refused."""
    out = Path(out)
    if prompts is None and not results:
        raise ExportError("export: nothing to export; give --benchmark and/or --results")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not empty; remove it or choose another folder")
    import datasets  # heavy (pyarrow), and only the export needs it: after the checks, which fail at once
    splits, record = {}, {"schema": EXPORT_SCHEMA}
    if prompts is not None:
        splits["prompts"] = datasets.Dataset.from_pandas(prompts_frame(prompts), preserve_index=False)
        record["prompts"] = {"benchmark": prompts.benchmark.name, "version": prompts.benchmark.version,
                             "origin": prompts.origin, "sha256": prompts.sha256}
    if results:
        frame, protocols = scores_frame(results)
        splits["scores"] = datasets.Dataset.from_pandas(frame, preserve_index=False)
        record["scores"] = {"results": [{"path": str(p), "sha256": sha256_file(p)} for p in results],
                            "protocols": protocols}
    record["provenance"] = collect().to_dict()
    text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        datasets.DatasetDict(splits).save_to_disk(str(tmp))
        write_text(tmp / "export.json", text)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
