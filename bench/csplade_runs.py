"""Alive terms per step of CSPLADE contrastive runs (the dying-ReLU reading of spec B3.1 / B6), from their
``train.log.jsonl``: one chart with the mean number of positive-weight terms per query and per document,
and a Markdown table of each run's first, middle and last records; with ``--dev-out``, a second chart of
the dev measurements the runs logged (nDCG@10 and the share of queries without a function word in their
top 5, against training steps).

    .venv/bin/python bench/csplade_runs.py docs/csplade/runs/*.jsonl --out docs/csplade/runs.png \
        --dev-out docs/csplade/dev.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    """The per-step records of a contrastive run (those with ``q_terms``)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if "q_terms" in r]


def read_dev(path: Path) -> list[dict]:
    """The dev measurements of a run (records with ``dev``: step, and nDCG@10, function-free share, terms)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"step": r["step"], **r["dev"]} for r in rows if "dev" in r]


def dev_chart(logs: list[Path], out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for path in logs:
        rows = read_dev(path)
        if rows:
            name = path.stem.removesuffix(".log")
            for ax, key in zip(axes, ("ndcg10", "function_free"), strict=True):
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=name)
    for ax, title in zip(axes, ("nDCG@10, libreoffice-en dev (exact, in memory)",
                                "dev queries without a function word in their top 5"), strict=True):
        ax.set_xlabel("training step (4 queries, 8 passages)")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def summary(name: str, rows: list[dict], window: int = 10) -> str:
    """A table row: mean query / document terms and ranking loss over the first, middle and last
    ``window`` logged steps (single steps are noisy at batch size 4)."""
    middle = max(0, len(rows) // 2 - window // 2)
    cells = []
    for part in (rows[:window], rows[middle : middle + window], rows[-window:]):
        mean = {k: sum(r[k] for r in part) / len(part) for k in ("q_terms", "d_terms", "rank_loss")}
        steps = f"{part[0]['step']}-{part[-1]['step']}"
        cells.append(f"{steps}: {mean['q_terms']:.0f} / {mean['d_terms']:.0f}, loss {mean['rank_loss']:.2f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="train.log.jsonl files (the name is the file's stem)")
    parser.add_argument("--out", type=Path, required=True, help="chart (PNG)")
    parser.add_argument("--dev-out", type=Path, help="chart of the dev measurements (PNG)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    print("| run | first steps: query / document terms, ranking loss | middle | last |\n|---|---|---|---|")
    for path in args.logs:
        rows = read_log(path)
        if not rows:
            continue
        name = path.stem.removesuffix(".log")
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes, ("q_terms", "d_terms"), strict=True):
            ax.plot(steps, [max(r[key], 0.5) for r in rows], label=name)
        print(summary(name, rows))
    for ax, title in zip(axes, ("queries", "documents"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"alive terms per {title[:-1]} (log; 0 drawn at 0.5)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("terms with a positive weight (of 49,152)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    if args.dev_out:
        dev_chart(args.logs, args.dev_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
