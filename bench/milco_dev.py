"""milco-mini on the four title and keyword retrieval sets, scored exactly in memory, and two changes that need no
training studied on them (issue 30, items 3 and 4):

- **term prior**: lower the English head's decoder bias of the pivot terms common across training pages, until
  none is among the top 20 terms of more than a share ``cap`` of them (``log(1 + ReLU(logit - delta))``: the
  same function of a smaller bias, so it would ship as a delta, not code). It prices common terms as a
  document-frequency penalty would, with the encoder unchanged.
- **echo prior**: scale each source piece's echo weight by ``min(1, tau / df)``, ``df`` the largest share of a
  training language's pages holding the piece (``の``, ``ér``, ``ze`` sit in most pages of their language and
  match any of them); and echo of word-initial pieces only (no sub-word fragments).

The numbers equal the OpenSearch runs of ``bench/evaluate.py`` (same sets, 1,000 queries each, documents pruned
to their top 40 terms per view, exact scoring without query pruning): what this adds is speed once encoded, so
a variant or a checkpoint is judged in seconds. Train pages give the calibration; the split's queries judge it.

    .venv/bin/python bench/milco_dev.py                      # the newest milco-mini, dev, with the studies
    .venv/bin/python bench/milco_dev.py DELTA_DIR --no-studies

Encodings are cached under ``<cache>/bench/`` (about 12 min on 2 cores the first time, then seconds). Writes
``reports/milco/<name>-<version>-<split>.json`` (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Short name -> dataset (bench/evaluate.py's runs without their split).
SETS = {"titles-clir": "libreoffice-clir", "keywords-clir": "libreoffice-keywords-clir",
        "titles-mlir": "libreoffice-mlir", "keywords-mlir": "libreoffice-keywords-mlir"}
ALPHAS = (0.5, 1.0)
DOC_TOP_K = 40
MAX_QUERIES = 1000
TOP = 20  # the always-on gate's top terms (milco_os.training.gates.always_on, which measures it here too)
#: Training pages that calibrate the term prior: these languages, this many train-split pages of each.
CALIBRATION_LANGUAGES = ("en-us", "de", "fr", "es", "ja", "zh-cn", "ru", "pt", "it", "nl")
CALIBRATION_PAGES = 300
TERM_PRIOR_CAPS = (0.10, 0.05)
ECHO_PRIOR_TAUS = (0.3, 0.1, 0.03)


@dataclass
class Rows:
    """Encodings as arrays: per text, (pivot ids, weights, echo ids, weights)."""

    texts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, encoded: Sequence[Any]) -> Rows:
        return cls([(e.pivot.ids, e.pivot.weights.astype(np.float64), e.echo.ids, e.echo.weights.astype(np.float64))
                    for e in encoded])


Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                     tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def term_prior(delta: np.ndarray) -> Transform:
    """Pivot weights after lowering each term's logit by ``delta`` (``w = log(1 + ReLU(logit))``)."""
    def apply(pid: np.ndarray, pw: np.ndarray, eid: np.ndarray, ew: np.ndarray) -> tuple[np.ndarray, ...]:
        return pid, np.log1p(np.maximum(np.expm1(pw) - delta[pid], 0.0)), eid, ew
    return apply


def echo_prior(factor: np.ndarray) -> Transform:
    """Echo weights scaled per source piece."""
    def apply(pid: np.ndarray, pw: np.ndarray, eid: np.ndarray, ew: np.ndarray) -> tuple[np.ndarray, ...]:
        return pid, pw, eid, ew * factor[eid]
    return apply


def views(rows: Rows, transform: Transform | None, top_k: int | None) -> tuple[list, list]:
    """(pivot, echo): per text, (ids, weights) of its positive entries, each view cut to its ``top_k`` largest."""
    pivots, echoes = [], []
    for row in rows.texts:
        pid, pw, eid, ew = transform(*row) if transform else row
        out = []
        for ids, w in ((pid, pw), (eid, ew)):
            ids, w = ids[w > 0], w[w > 0]
            if top_k is not None and len(w) > top_k:
                keep = np.argsort(-w, kind="stable")[:top_k]
                ids, w = ids[keep], w[keep]
            out.append((ids, w))
        pivots.append(out[0])
        echoes.append(out[1])
    return pivots, echoes


def dense_over(rows: list[tuple[np.ndarray, np.ndarray]], columns: dict[int, int]) -> np.ndarray:
    """Rows as a dense matrix over ``columns`` (term id -> column); other terms are dropped."""
    out = np.zeros((len(rows), len(columns)), dtype=np.float32)
    for r, (ids, w) in enumerate(rows):
        for i, v in zip(ids.tolist(), w.tolist(), strict=True):
            c = columns.get(i)
            if c is not None:
                out[r, c] = v
    return out


def scores(queries: tuple[list, list], docs: tuple[list, list], alpha: float) -> np.ndarray:
    """[queries, docs] = alpha * <q_pivot, d_pivot> + (1 - alpha) * <q_echo, d_echo> (the product's score)."""
    total = np.zeros((len(queries[0]), len(docs[0])), dtype=np.float32)
    for q_view, d_view, weight in ((queries[0], docs[0], alpha), (queries[1], docs[1], 1 - alpha)):
        if weight == 0:
            continue
        terms = sorted({int(i) for ids, _ in q_view for i in ids})
        columns = {t: c for c, t in enumerate(terms)}
        total += weight * (dense_over(q_view, columns) @ dense_over(d_view, columns).T)
    return total


def cap_delta(logits: np.ndarray, cap: float, top: int = TOP, rounds: int = 30) -> np.ndarray:
    """Per-term logit shifts (>= 0) after which no term is among the ``top`` largest positive entries of more than
    ``cap`` of the rows of ``logits`` ([texts, V]: the positive part of the max-pooled logits). Each round solves
    every offending term alone (how far to lower it so that only ``cap * n`` rows keep it above their ``top``-th
    other term), then looks again, as lowering one term lets others into the top."""
    keep = int(cap * len(logits))
    delta = np.zeros(logits.shape[1])
    for _ in range(rounds):
        x = np.maximum(logits - delta, 0)
        part = -np.partition(-x, [top - 1, top], axis=1)
        kth, next_ = part[:, top - 1], part[:, top]
        in_top = (x >= kth[:, None]) & (x > 0)
        over = np.nonzero(in_top.sum(0) > keep)[0]
        if len(over) == 0:
            break
        for t in over:
            threshold = np.where(in_top[:, t], next_, kth)  # the row's top-th term once t leaves
            margin = np.sort(x[:, t] - threshold)[::-1]
            delta[t] += max(float(margin[keep]), 0.0) + 1e-4
    return delta


def piece_df(cache_dir: Path, tokenizer: Any, size: int) -> np.ndarray:
    """Per source piece, the largest share of one language's train pages that hold it."""
    from milco_os.datasets import libreoffice

    langs = libreoffice.DEFAULT_LANGUAGES
    root = libreoffice.fetch_help(langs, cache_dir)
    df = np.zeros(size)
    for lang in langs:
        pages = libreoffice.load_pages(root, lang)
        texts = [libreoffice.page_text(pages[p]) for p in sorted(pages) if libreoffice.split_of(p) == "train"]
        counts = np.zeros(size)
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            counts[np.unique(np.asarray(ids, dtype=np.int64))] += 1
        df = np.maximum(df, counts / max(len(texts), 1))
    return df


def calibration_texts(cache_dir: Path) -> list[str]:
    from milco_os.datasets import libreoffice

    root = libreoffice.fetch_help(list(CALIBRATION_LANGUAGES), cache_dir)
    rng = random.Random(0)
    texts = []
    for lang in CALIBRATION_LANGUAGES:
        pages = libreoffice.load_pages(root, lang)
        train = sorted(p for p in pages if libreoffice.split_of(p) == "train")
        texts += [libreoffice.page_text(pages[p]) for p in rng.sample(train, min(CALIBRATION_PAGES, len(train)))]
    return texts


@dataclass
class EvalData:
    queries: list[dict[str, Any]]
    qrels: dict[str, dict[str, int]]
    doc_ids: list[str]
    doc_langs: list[str]
    query_rows: Rows
    doc_rows: Rows


def measure(data: dict[str, EvalData], transform: Transform | None, vocab: Any) -> dict[str, Any]:
    """nDCG@10 (overall and per query language) at each α, pivot postings per query, the other-language share of
    the MLIR hits against a language-blind ranking's, and the always-on term of the English pages (named in the
    pivot ``vocab``)."""
    import torch

    from milco_os.evaluation.metrics import evaluate
    from milco_os.training.gates import always_on

    out: dict[str, Any] = {"sets": {}}
    docs_cache: dict[int, tuple[list, list]] = {}
    for name, d in data.items():
        docs = docs_cache.setdefault(id(d.doc_rows), views(d.doc_rows, transform, DOC_TOP_K))
        queries = views(d.query_rows, transform, None)
        result: dict[str, Any] = {}
        for alpha in ALPHAS:
            top10 = np.argsort(-scores(queries, docs, alpha), axis=1, kind="stable")[:, :10]
            run = {q["id"]: [d.doc_ids[j] for j in top10[i]] for i, q in enumerate(d.queries)}
            metrics = evaluate(run, d.qrels, {q["id"]: q["lang"] for q in d.queries}, ("ndcg@10",))
            result[str(alpha)] = {"ndcg@10": round(metrics["overall"]["ndcg@10"], 4),
                                  "per_language": {lang: round(m["ndcg@10"], 4)
                                                   for lang, m in metrics["per_language"].items()}}
            if name.endswith("mlir") and alpha == 0.5:
                langs = np.array(d.doc_langs)
                query_langs = np.array([q["lang"] for q in d.queries])
                result["other_language"] = round(float((langs[top10] != query_langs[:, None]).mean()), 4)
                result["other_language_blind"] = round(float(np.mean([1 - (langs == ql).mean()
                                                                      for ql in query_langs])), 4)
        df: dict[int, int] = {}
        for ids, _ in docs[0]:
            for i in ids.tolist():
                df[i] = df.get(i, 0) + 1
        result["postings_per_query"] = round(float(np.mean([sum(df.get(i, 0) for i in ids.tolist())
                                                           for ids, _ in queries[0]])), 1)
        out["sets"][name] = result
    english = next(d for name, d in data.items() if name.endswith("clir"))
    pivots = docs_cache[id(english.doc_rows)][0]
    dense = torch.zeros(len(pivots), len(vocab))
    for r, (ids, w) in enumerate(pivots):
        dense[r, torch.from_numpy(ids)] = torch.from_numpy(w).float()
    term, share = always_on(dense, TOP)
    out["always_on"] = round(share, 4)
    out["always_on_term"] = vocab.tokens[term]
    out["doc_terms"] = round(float(np.mean([len(ids) for ids, _ in pivots])), 1)
    return out


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Means over the sets: nDCG@10 at each α, postings per query; the MLIR other-language share."""
    sets = result["sets"].values()
    out = {f"ndcg@10 a={a}": round(float(np.mean([s[str(a)]["ndcg@10"] for s in sets])), 4) for a in ALPHAS}
    out["postings_per_query"] = round(float(np.mean([s["postings_per_query"] for s in sets])), 1)
    mlir = [s for s in sets if "other_language" in s]
    out["other_language"] = round(float(np.mean([s["other_language"] for s in mlir])), 4)
    out["other_language_blind"] = round(float(np.mean([s["other_language_blind"] for s in mlir])), 4)
    return out


def load_data(encoder: Any, cache_dir: Path, split: str, label: str) -> dict[str, EvalData]:
    from common import encode_cached

    from milco_os.evaluation import runner

    data = {}
    corpora: dict[tuple[str, ...], Rows] = {}  # the CLIR sets share the English pages, the MLIR sets the mixed ones
    for name, dataset in SETS.items():
        evalset, _ = runner.load_eval_set(dataset, split, None, cache_dir)
        subset, _ = runner.judged_queries(evalset, MAX_QUERIES)
        texts = tuple(d["text"] for d in subset.corpus)
        if texts not in corpora:
            kind = name.split("-")[1]
            corpora[texts] = Rows.of(encode_cached(encoder, "torch", texts, cache_dir, f"{label}-{kind}")[0])
        data[name] = EvalData(
            queries=subset.queries, qrels=subset.qrels, doc_ids=[d["id"] for d in subset.corpus],
            doc_langs=[d.get("lang", "en-us") for d in subset.corpus],
            query_rows=Rows.of(encoder.encode_queries([q["text"] for q in subset.queries])),
            doc_rows=corpora[texts])
    return data


def studies(encoder: Any, cache_dir: Path, data: dict[str, EvalData], label: str) -> list[dict[str, Any]]:
    from common import encode_cached, log

    calibration = Rows.of(encode_cached(encoder, "torch", calibration_texts(cache_dir), cache_dir,
                                        f"{label}-calibration")[0])
    logits = np.zeros((len(calibration.texts), len(encoder.info.pivot_vocab)), dtype=np.float32)
    for r, (pid, pw, _, _) in enumerate(calibration.texts):
        logits[r, pid] = np.expm1(pw)
    found = []

    def study(name: str, transform: Transform, **facts: Any) -> None:
        result = measure(data, transform, encoder.info.pivot_vocab)
        found.append({"variant": name, **facts, "summary": summary(result), **result})
        log(f"{name}: {found[-1]['summary']}")

    for cap in TERM_PRIOR_CAPS:
        delta = cap_delta(logits, cap)
        study(f"term prior, cap {cap:g}", term_prior(delta), terms_lowered=int((delta > 0).sum()))
    echo_vocab = encoder.info.echo_vocab
    df = piece_df(cache_dir, encoder.tokenizer, len(echo_vocab))
    for tau in ECHO_PRIOR_TAUS:
        study(f"echo prior, tau {tau:g}", echo_prior(np.minimum(1.0, tau / np.maximum(df, 1e-9))))
    word_initial = np.array([t.startswith("▁") for t in echo_vocab.tokens], dtype=np.float64)
    study("echo of word-initial pieces only", echo_prior(word_initial))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("delta", nargs="?", type=Path, default=None,
                        help="a milco-mini delta directory (default: the newest shipped version)")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--no-studies", action="store_true", help="measure the delta as it is, nothing else")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from common import log

    from milco_os.loading import load_dir
    from milco_os.models.sources import milco_mini
    from milco_os.models.sources.versions import version_dir
    from milco_os.settings import Settings

    cache_dir = Settings().cache_dir
    delta = args.delta or version_dir(ROOT / "milco_os" / "models" / "milco_mini", milco_mini.NAME, None)[0]
    encoder = load_dir(milco_mini.build_model(cache_dir, delta))
    label = f"milco-dev-{delta.parent.name}-{delta.name}"
    data = load_data(encoder, cache_dir, args.split, label)
    result = measure(data, None, encoder.info.pivot_vocab)
    shipped = delta.parent == ROOT / "milco_os" / "models" / "milco_mini"
    report = {"model": f"{milco_mini.NAME}@{delta.name}" if shipped else str(delta),
              "delta": str(delta.relative_to(ROOT)) if delta.is_relative_to(ROOT) else str(delta),
              "split": args.split, "queries_per_set": MAX_QUERIES, "doc_top_k": DOC_TOP_K,
              "summary": summary(result), **result}
    log(f"{delta}: {report['summary']}")
    if not args.no_studies:
        report["calibration"] = {"languages": list(CALIBRATION_LANGUAGES), "pages_per_language": CALIBRATION_PAGES}
        report["studies"] = studies(encoder, cache_dir, data, label)
    name = f"{delta.parent.name.replace('_', '-')}-{delta.name}-{args.split}.json"
    out = args.out or ROOT / "reports" / "milco" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
