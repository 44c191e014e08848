"""Sweep results -> tables (CSV, Markdown) and a plot. No Ray here: it reads plain trial records.

A trial record is a dict (one per Tune trial, written to `trials.json` by `tune.sweep`):
    trial_id, loss, regularizer, lr, seed   what was tried (loss/regularizer are display labels)
    status                                  completed | stopped (ASHA) | failed
    error                                   the failure's last line, or None
    steps, wall_s                           how far it got and how long it took
    val_balanced_accuracy                   best validation value seen (the selection metric)
    test_balanced_accuracy, test_macro_f1, test_minority_recall, test_accuracy
                                            test split, measured once after training (completed only)
    history                                 [{"step": int, "val_balanced_accuracy": float, ...}, ...]

`python -m tune.report RUN_DIR/tune` rebuilds every file from `trials.json`.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

TEST_METRICS = ("balanced_accuracy", "macro_f1", "minority_recall", "accuracy")
GROUP_KEYS = ("loss", "regularizer", "lr")
TRIAL_COLUMNS = ("trial_id", "loss", "regularizer", "lr", "seed", "status", "steps",
                 "val_balanced_accuracy", *(f"test_{m}" for m in TEST_METRICS), "wall_s", "error")


def trials_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial, best test balanced accuracy first; failed trials last."""
    rows = [{c: r.get(c) for c in TRIAL_COLUMNS} for r in records]
    df = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    for c in ("val_balanced_accuracy", *(f"test_{m}" for m in TEST_METRICS), "lr", "wall_s"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    order = df["status"].map({"completed": 0, "stopped": 1}).fillna(2)
    df = df.assign(_o=order).sort_values(["_o", "test_balanced_accuracy", "val_balanced_accuracy"],
                                         ascending=[True, False, False], na_position="last")
    return df.drop(columns="_o").reset_index(drop=True)


def summary_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Mean and sample std over seeds of every test metric per (loss, regularizer, lr).

    Only completed trials carry test metrics; `n` counts them, `n_stopped`/`n_failed` the rest, so a
    configuration that ASHA cut or that crashed is visible instead of silently missing.
    """
    df = trials_frame(records)
    out = []
    for key, g in df.groupby(list(GROUP_KEYS), sort=False, dropna=False):
        done = g[g["status"] == "completed"]
        row = dict(zip(GROUP_KEYS, key))
        row["n"] = len(done)
        row["n_stopped"] = int((g["status"] == "stopped").sum())
        row["n_failed"] = int((g["status"] == "failed").sum())
        for m in TEST_METRICS:
            vals = done[f"test_{m}"].dropna()
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        vals = g["val_balanced_accuracy"].dropna()
        row["val_balanced_accuracy_mean"] = float(vals.mean()) if len(vals) else math.nan
        out.append(row)
    s = pd.DataFrame(out)
    if s.empty:
        return s
    return s.sort_values("balanced_accuracy_mean", ascending=False, na_position="last").reset_index(drop=True)


def _fmt(x: Any, digits: int = 3, sci: bool = False) -> str:
    """Metrics with fixed decimals; `sci` (learning rates, strengths) in 1e-03 style when small."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        if sci and x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
            return f"{x:.0e}"
        return f"{x:.{digits}f}"
    return str(x)


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return _fmt(mean) if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub Markdown table; cells formatted with `_fmt` (pipes escaped); an "lr" column in 1e-03 style."""
    sci = [h == "lr" for h in header]
    cells = [[_fmt(c, sci=k).replace("|", "\\|") for c, k in zip(r, sci)] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def summary_markdown(records: list[dict[str, Any]]) -> str:
    s = summary_frame(records)
    header = ["loss", "regularizer", "lr", "n", "balanced acc", "macro-F1", "minority recall", "accuracy",
              "stopped/failed"]
    rows = [[r["loss"], r["regularizer"], r["lr"], r["n"],
             *(_pm(r[f"{m}_mean"], r[f"{m}_std"]) for m in TEST_METRICS),
             f"{r['n_stopped']}/{r['n_failed']}"] for _, r in s.iterrows()]
    return markdown_table(header, rows)


def trials_markdown(records: list[dict[str, Any]]) -> str:
    df = trials_frame(records)
    header = ["trial", "loss", "regularizer", "lr", "seed", "status", "steps", "val bal acc",
              "test bal acc", "test macro-F1", "test minority recall", "test acc"]
    rows = [[r["trial_id"], r["loss"], r["regularizer"], r["lr"], r["seed"], r["status"], r["steps"],
             r["val_balanced_accuracy"], *(r[f"test_{m}"] for m in TEST_METRICS)] for _, r in df.iterrows()]
    return markdown_table(header, rows)


def plot(records: list[dict[str, Any]], path: str | Path, best_k: int = 4) -> Path:
    """Left: mean ± std test balanced accuracy per loss, one bar per regulariser.
    Right: validation balanced accuracy against step for the best `best_k` trials (by validation)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt

    s = summary_frame(records)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    if not s.empty:
        # Several learning rates: show each configuration's best lr so that the bars stay one per cell.
        best = s.sort_values("balanced_accuracy_mean", ascending=False, na_position="last")
        best = best.drop_duplicates(["loss", "regularizer"])
        losses = list(dict.fromkeys(r["loss"] for r in records))
        regs = list(dict.fromkeys(r["regularizer"] for r in records))
        width = 0.8 / max(1, len(regs))
        for j, reg in enumerate(regs):
            sub = best[best["regularizer"] == reg].set_index("loss").reindex(losses)
            xs = [i + (j - (len(regs) - 1) / 2) * width for i in range(len(losses))]
            ax1.bar(xs, sub["balanced_accuracy_mean"].fillna(0), width,
                    yerr=sub["balanced_accuracy_std"].fillna(0), capsize=2, label=reg)
        ax1.set_xticks(range(len(losses)), losses, rotation=25, ha="right")
        finite = s["balanced_accuracy_mean"].dropna()
        if len(finite):
            ax1.set_ylim(max(0.0, finite.min() - 0.1), min(1.0, finite.max() + 0.05))
        ax1.axhline(0.5, color="grey", lw=0.8, ls=":")  # chance for two balanced classes
        ax1.legend(title="regulariser", fontsize=8)
    ax1.set_ylabel("test balanced accuracy (mean ± std over seeds)")
    ax1.set_title("loss × regulariser")

    ranked = sorted((r for r in records if r.get("history")),
                    key=lambda r: -(r.get("val_balanced_accuracy") or -1.0))[:best_k]
    for r in ranked:
        pts = [(h["step"], h["val_balanced_accuracy"]) for h in r["history"]
               if h.get("step") is not None and h.get("val_balanced_accuracy") is not None]
        if pts:
            xs, ys = zip(*sorted(pts))
            ax2.plot(xs, ys, marker="o", ms=3, label=f"{r['loss']} + {r['regularizer']} lr={_fmt(r['lr'], sci=True)} s{r['seed']}")
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation balanced accuracy")
    ax2.set_title(f"learning curves, best {len(ranked)} trials")
    if ranked:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(records: list[dict[str, Any]], out_dir: str | Path, title: str = "Sweep",
                 notes: list[str] | None = None) -> dict[str, Path]:
    """Write trials.json, trials.csv, summary.csv, results.md, results.png and meta.json into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "trials.json", "csv": out / "trials.csv", "summary_csv": out / "summary.csv",
             "markdown": out / "results.md", "plot": out / "results.png", "meta": out / "meta.json"}
    paths["json"].write_text(json.dumps(records, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    paths["meta"].write_text(json.dumps({"title": title, "notes": notes or []}, indent=1, ensure_ascii=False),
                             encoding="utf-8")  # so that `python -m tune.report` rebuilds the same page
    trials_frame(records).to_csv(paths["csv"], index=False)
    summary_frame(records).to_csv(paths["summary_csv"], index=False)
    counts = pd.Series([r.get("status") for r in records]).value_counts().to_dict()
    md = [f"# {title}", "", *(notes or []), "",
          f"Trials: {len(records)} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}). "
          "Test metrics come from completed trials only; mean ± std is over seeds (sample std).", "",
          "## Mean ± std over seeds per (loss, regulariser, lr), test split", "", summary_markdown(records), "",
          "## Every trial", "", trials_markdown(records), ""]
    failed = [r for r in records if r.get("status") == "failed"]
    if failed:
        md += ["## Failed trials", ""] + [f"- `{r['trial_id']}` ({r['loss']} + {r['regularizer']}): {r.get('error')}"
                                          for r in failed] + [""]
    md += [f"![balanced accuracy by loss and regulariser]({paths['plot'].name})", ""]
    paths["markdown"].write_text("\n".join(md), encoding="utf-8")
    plot(records, paths["plot"])
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tune.report SWEEP_DIR   (the directory holding trials.json)", file=sys.stderr)
        return 2
    d = Path(argv[0])
    records = json.loads((d / "trials.json").read_text(encoding="utf-8"))
    meta = json.loads((d / "meta.json").read_text(encoding="utf-8")) if (d / "meta.json").is_file() else {}
    for name, p in write_report(records, d, meta.get("title", "Sweep"), meta.get("notes")).items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
