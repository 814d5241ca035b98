#!/usr/bin/env python3
"""Trims a study folder for the record in reports/studies/: keeps the plan, the text tables,
report.md and the charts of outputs 1 and 3 (by default the revenue change at fixed prices and
with auctions, at no opt-out), drops report.html, the SVGs, evaluations.parquet and the other charts
(about 6 MB a study), and says so at the top of each report.md. A study at several seeds keeps
charts in its first seed's folder only (the others' tables say how far they differ).
`adsim study plan.toml --out DIR` in the folder redraws everything.

    python3 tools/record_study.py reports/studies/NAME
"""
import pathlib
import re
import sys

KEEP = re.compile(r"_(1|3)\.png$")
NOTE = (
    "> Recorded copy (tools/record_study.py): the tables, and the charts of outputs 1 and 3 "
    "only (of the first seed only, in a study at several seeds). `adsim study plan.toml --out "
    "DIR` from this folder rewrites every file: all charts, report.html, the SVGs and "
    "evaluations.parquet.\n\n"
)


def trim(folder: pathlib.Path) -> None:
    seeds = sorted(folder.glob("seed-*"), key=lambda p: int(p.name.split("-")[1]))
    # Charts of a study at several seeds are kept in its first seed's folder only.
    later = seeds[1:]
    for path in folder.rglob("*"):
        if path.suffix == ".svg" or path.name in ("report.html", "evaluations.parquet"):
            path.unlink()
        elif path.suffix == ".png" and (
            not KEEP.search(path.name) or any(seed in path.parents for seed in later)
        ):
            path.unlink()
    for report in folder.rglob("report.md"):
        lines = report.read_text().splitlines(keepends=True)
        kept = []
        for line in lines:
            image = re.match(r"!\[[^\]]*\]\(([^)]+\.png)\)", line.strip())
            if image and not (report.parent / image.group(1)).exists():
                continue
            kept.append(line)
        text = "".join(kept)
        if text.startswith("> Recorded copy"):
            text = text.split("\n\n", 1)[1]
        text = NOTE + text
        report.write_text(text)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        trim(pathlib.Path(name))
