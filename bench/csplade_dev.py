"""Known-item search on libreoffice-en scored exactly in memory for a csplade-mini delta: nDCG@10, the share of
queries none of whose top 5 terms is a function word (the fixed list of milco_os/evaluation/function_words.py),
and the kept terms per query and page. The same measurement the contrastive runs log every ``eval_every``
steps (``milco_os.training.csplade.known_item_measure``), for a delta already trained: the shipped versions'
reference on dev, and the test split's once, for the version chosen on dev.

    .venv/bin/python bench/csplade_dev.py milco_os/models/csplade_mini/1 --split dev    # ~3 min on 2 cores

Writes ``reports/csplade/<delta's parent name>-<version>-<split>.json`` (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("delta", type=Path, help="a csplade-mini delta (adapt/, contrastive/, manifest.json)")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--out", type=Path, help="report file (default reports/csplade/<name>-<split>.json)")
    args = parser.parse_args(argv)
    from milco_os.paths import write_text_atomic
    from milco_os.settings import default_cache_dir
    from milco_os.training.csplade import measure_delta

    result = {"delta": str(args.delta.resolve().relative_to(ROOT)) if args.delta.resolve().is_relative_to(ROOT)
              else str(args.delta), **measure_delta(args.delta, default_cache_dir(), args.split)}
    name = f"{args.delta.resolve().parent.name.replace('_', '-')}-{args.delta.resolve().name}"
    out = args.out or ROOT / "reports" / "csplade" / f"{name}-{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
