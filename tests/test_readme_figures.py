"""Every figure in the README's benchmark table is copied from a stored output under docs/results/."""
from __future__ import annotations

import bisect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
FIGURE_COLUMNS = ("ours", "anchor", "ratio")  # the measured columns (not the command, result or target)
# a figure: digits, thousands commas and decimals; not part of a name or setting such as fp32, GPT2 or c=32
NUMBER = re.compile(r"(?<![\w.=])(\d[\d,]*(?:\.\d+)?)(?![\w.])(\s?%)?")
STORED = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def benchmark_table(readme: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, body rows) of the first table after the **Benchmarks.** paragraph."""
    lines = readme[readme.index("**Benchmarks.**"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return table[0], [row for row in table[2:]]


def readme_figures() -> list[tuple[str, float, int]]:
    """(text as written, value, decimals) for every figure in the table's measured columns."""
    header, rows = benchmark_table((ROOT / "README.md").read_text(encoding="utf-8"))
    columns = [i for i, name in enumerate(header) if name.split(" ")[0] in FIGURE_COLUMNS]
    assert len(columns) == len(FIGURE_COLUMNS), f"README benchmark table header changed: {header}"
    figures = []
    for row in rows:
        for i in columns:
            for text, percent in NUMBER.findall(row[i] if i < len(row) else ""):
                text = text.rstrip(",")
                value = float(text.replace(",", ""))
                decimals = len(text.split(".")[1]) if "." in text else 0
                figures.append((text + (" %" if percent else ""), value / 100 if percent else value,
                                decimals + (2 if percent else 0)))
    return figures


def stored_numbers() -> list[float]:
    values = set()
    for path in RESULTS.rglob("*"):
        if path.suffix in (".txt", ".md", ".json", ".jsonl", ".csv", ".log"):
            values.update(float(m) for m in STORED.findall(path.read_text(encoding="utf-8", errors="replace")))
    return sorted(values)


def occurs(value: float, decimals: int, stored: list[float]) -> bool:
    """Some stored number rounds to `value` at the README's precision."""
    half = 0.5 * 10 ** -decimals * (1 + 1e-9)
    i = bisect.bisect_left(stored, value - half)
    return i < len(stored) and stored[i] <= value + half


def test_the_figure_parser_reads_names_apart_from_numbers():
    found = NUMBER.findall("HF GPT2LMHeadModel fp32 1,701 | 2.02–2.22× over runs; 7.5 % (c=32)")
    assert found == [("1,701", ""), ("2.02", ""), ("2.22", ""), ("7.5", " %")]
    assert occurs(0.551, 3, [0.5510530]) and not occurs(0.551, 3, [0.5521]) and occurs(1701, 0, [1700.6])


def test_every_readme_benchmark_figure_occurs_in_a_stored_output():
    stored = stored_numbers()
    figures = readme_figures()
    assert figures, "no figures parsed from the README's benchmark table"
    missing = [text for text, value, decimals in figures if not occurs(value, decimals, stored)]
    assert not missing, ("README benchmark-table figures found in no stored output under docs/results/ "
                         f"({len(missing)} of {len(figures)}): {', '.join(missing)}")
