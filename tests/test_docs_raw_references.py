"""Every raw record the benchmark docs name by its whole file name is in docs/bench-raw.

The docs cite each measurement's raw file (docs/benchmarks.md, docs/bench-history/); a rename or
a compression of those files (large ones are kept as .gz: docs/benchmarks.md, "How to
reproduce") must carry its citations along. Names written as patterns (`2026-12-02o-*`, with
`...` or `{a,b}`) are left alone: only a complete name is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "docs" / "bench-raw"
HISTORY = ROOT / "docs" / "bench-history"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(HISTORY.glob("*.md"))]

# A dated record's name: the date, a tag, an extension the records use (then perhaps .gz). The
# match stops at a character no record name holds, so `name.json`, `name.json.gz` and
# `name.txt` in prose come out whole.
EXTENSIONS = "json|jsonl|txt|csv|log|patch|sh|py|cu"
NAME = re.compile(rf"20\d\d-\d\d-\d\d[A-Za-z0-9_.+-]*\.(?:{EXTENSIONS})(?:\.gz)?")


def cited_names(text: str) -> set[str]:
    """The complete record names in ``text`` (not patterns, nor bench-history's day files)."""
    names = set()
    for match in NAME.finditer(text):
        name = match.group(0)
        if "..." in name or text[match.end() : match.end() + 1] in ("*", "{"):
            continue  # a pattern, not a name
        names.add(name)
    return names


def test_the_name_pattern_reads_names_and_skips_patterns():
    text = (
        "raw `2026-12-01b-h200-exp2-on-fma-ab.txt`,"
        " `2026-12-06s76-h200-main-bench-prefill.json.gz`; `2026-12-02o-*` and"
        " `2026-12-02a-...-first-ab.txt`, `2026-12-07s85-softmax-ring{,-fence}`"
    )
    assert cited_names(text) == {
        "2026-12-01b-h200-exp2-on-fma-ab.txt",
        "2026-12-06s76-h200-main-bench-prefill.json.gz",
    }


def test_every_cited_raw_record_exists():
    present = {path.name for path in RAW.iterdir()}
    missing = sorted(
        f"{doc.relative_to(ROOT)}: {name}"
        for doc in DOCS
        for name in cited_names(doc.read_text(encoding="utf-8"))
        if name not in present
    )
    assert not missing, "cited but not in docs/bench-raw:\n" + "\n".join(missing)
