"""Extract the printed numbers of the paper's 14 tables from a markdown transcription into tests/data/paper_tables.json.

Run once when the transcription changes; the tests read the JSON so they run without the transcription:

    python scripts/extract_paper_tables.py /work/shared/reference/paper.md tests/data/paper_tables.json

The parser is independent of sana_eval.tables (the registry it checks). Each table is written as its source tag,
its column headers as printed, and one record per data row: group (descriptor columns become groups, as in the
registry), row label, and the printed value under each column header.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SECTION = re.compile(r"^### Table (\d+) \[(P|P-img)\].*$", flags=re.M)


def norm(text: str) -> str:
    text = re.sub(r"[¹²³]|\*\*", "", text).replace("×", "x").replace("(sic)", "")
    return " ".join(text.split())


def value(text: str) -> str:
    return re.sub(r"^(-?[\d.]+)\s*[x×]$", r"\1", norm(text))


def markdown_tables(section: str) -> list[list[list[str]]]:
    blocks, current = [], []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+", c) for c in cells):
                current.append(cells)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def sections(text: str) -> dict[int, tuple[str, str]]:
    """Table number -> (source tag, section text up to the next heading)."""
    parts = SECTION.split(text)
    return {int(parts[i]): (parts[i + 1], parts[i + 2].split("\n### ")[0].split("\n## ")[0])
            for i in range(1, len(parts), 3)}


def _record(group: str, label: str, header: list[str], cells: list[str]) -> dict:
    return {"group": " ".join(group.split()), "row": label,
            "values": {norm(h): value(c) for h, c in zip(header, cells, strict=True)}}


def rows(number: int, section: str) -> list[dict]:
    """One record per data row, mapped to the registry's layout (descriptor columns become groups)."""
    out = []
    for block in markdown_tables(section):
        header, body = block[0], block[1:]
        if number == 14:                   # two side-by-side halves: [res, speedup, throughput, latency] x 2
            for row in body:
                for half in (0, 4):
                    out.append(_record(norm(header[half]).replace("x", " x "), norm(row[half]),
                                       header[half + 1:half + 4], row[half + 1:half + 4]))
            continue
        group = ""
        for row in body:
            if row[0].startswith("**") and not any(row[1:]):
                group = norm(row[0]).replace("x", " x ").replace("  ", " ")
                continue
            if number == 2:
                out.append(_record(row[1], norm(row[0]), header[2:3], row[2:3]))
            elif number == 3:
                out.append(_record(row[3], norm(row[0]), header[1:3], row[1:3]))
            elif number == 8:
                out.append(_record(row[1], norm(row[0]), header[2:], row[2:]))
            elif number == 12:
                out.append(_record(f"{row[1]}, {row[2]} px", norm(row[0]), header[3:], row[3:]))
            else:
                out.append(_record(group, norm(row[0]), header[1:], row[1:]))
    return out


def extract(text: str) -> dict:
    return {"source": "SANA paper transcription (arXiv 2410.10629 v3), extracted by scripts/extract_paper_tables.py",
            "tables": {str(n): {"source_tag": tag, "rows": rows(n, body)}
                       for n, (tag, body) in sorted(sections(text).items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paper_md", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if not args.paper_md.is_file():
        print(f"error: {args.paper_md}: no such file", file=sys.stderr)
        return 2
    data = extract(args.paper_md.read_text())
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    count = sum(len(t["rows"]) for t in data["tables"].values())
    print(f"wrote {args.out}: {len(data['tables'])} tables, {count} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
