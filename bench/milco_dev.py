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
The delta as it is is also measured with the product's query pruning (``milco_os.pruning``, document frequencies
of the set's pruned pages): nDCG@10 at the default α and the pivot postings a query reads, for the default rule
and :data:`QUERY_PRUNES`, which is what a new version's default query pruning is chosen from. Each set's name
queries (:func:`name_queries`: a rare name the judged page spells the same way) are scored apart too: the queries
only exact matching answers, which the echo view is for.

    .venv/bin/python bench/milco_dev.py                      # the newest milco-mini, dev, with the studies
    .venv/bin/python bench/milco_dev.py DELTA_DIR --no-studies

Encodings are cached under ``<cache>/bench/`` (about 12 min on 2 cores the first time, then seconds). Writes
``reports/milco/<name>-<version>-<split>.json`` (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import json
import random
import re
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
#: α of the measures (the first also scores the query pruning rules): fixed, so that deltas stay comparable across
#: versions whatever the default α (bench/report.py ``MILCO_DEV_ALPHA``).
ALPHAS = (0.5, 1.0)
DOC_TOP_K = 40
MAX_QUERIES = 1000
TOP = 20  # the always-on gate's top terms (milco_os.training.gates.always_on, which measures it here too)
#: Training pages that calibrate the term prior: these languages, this many train-split pages of each.
CALIBRATION_LANGUAGES = ("en-us", "de", "fr", "es", "ja", "zh-cn", "ru", "pt", "it", "nl")
CALIBRATION_PAGES = 300
TERM_PRIOR_CAPS = (0.10, 0.05)
ECHO_PRIOR_TAUS = (0.3, 0.1, 0.03)
#: A name as the help writes it in every language: an all-caps word (TIME, AVEDEV, WMF), a camel-case one
#: (TimeSerial, IsNumeric, MathML), one with a digit, or dotted / underscored parts (com.sun.star).
NAME = re.compile(r"\b(?:[A-Z][A-Z0-9_]{2,}|[A-Za-z]*[a-z][A-Z][A-Za-z]*|[A-Za-z]*\d[A-Za-z\d]*|\w+[._][\w.]+)\b")
#: A name in more than this share of a set's pages (LibreOffice) identifies nothing.
NAME_MAX_SHARE = 0.02
#: Query pruning rules measured beside the default (selective:0.2) on the delta as it is: the default to choose with
#: a new version, as a model that ranks better can afford to read fewer postings (issue 30's postings target).
QUERY_PRUNES = ("selective:0.3", "selective:0.4", "selective:0.5", "top_k:8", "top_k:16")


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


@dataclass
class PageStats:
    """Document frequencies of the pruned pages per view (:class:`milco_os.pruning.TermStats`): what an index of
    them answers ``selective:R`` query pruning with."""

    n_docs: int
    df: dict[str, np.ndarray]

    @classmethod
    def of(cls, docs: tuple[list, list], sizes: tuple[int, int]) -> PageStats:
        return cls(len(docs[0]), {view: np.bincount(np.concatenate([ids for ids, _ in rows] + [np.zeros(0, int)]),
                                                    minlength=size)
                                  for view, rows, size in zip(("pivot", "echo"), docs, sizes, strict=True)})

    def doc_freq(self, view: str, vec: Any) -> np.ndarray:
        return self.df[view][vec.ids]


def pruned(queries: tuple[list, list], stats: PageStats, pruning: Any, info: Any) -> tuple[list, list]:
    """``queries`` after the product's query ``pruning`` (:meth:`milco_os.pruning.Pruning.apply`)."""
    from milco_os.types import Encoded, SparseVector

    pivots, echoes = [], []
    for (pid, pw), (eid, ew) in zip(*queries, strict=True):
        kept = pruning.apply(Encoded(SparseVector(pid, pw, info.pivot_vocab), SparseVector(eid, ew, info.echo_vocab)),
                             stats)
        pivots.append((kept.pivot.ids, kept.pivot.weights))
        echoes.append((kept.echo.ids, kept.echo.weights))
    return pivots, echoes


def top10(queries: tuple[list, list], docs: tuple[list, list], alpha: float) -> np.ndarray:
    """[queries, 10]: the indices of each query's ten best pages."""
    return np.argsort(-scores(queries, docs, alpha), axis=1, kind="stable")[:, :10]


def postings(queries: list, stats: PageStats) -> float:
    """Mean number of pivot postings a query's clauses visit."""
    return round(float(np.mean([stats.df["pivot"][ids].sum() for ids, _ in queries])), 1)


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
    #: Per query: whether it asks for an exact name (:func:`name_queries`).
    names: list[bool]


def ndcg(best: np.ndarray, d: EvalData) -> dict[str, Any]:
    """nDCG@10, overall and per query language, of the ranking ``best`` ([queries, 10] page indices)."""
    from milco_os.evaluation.metrics import evaluate

    run = {q["id"]: [d.doc_ids[j] for j in best[i]] for i, q in enumerate(d.queries)}
    return evaluate(run, d.qrels, {q["id"]: q["lang"] for q in d.queries}, ("ndcg@10",))


def name_queries(queries: list[dict[str, Any]], qrels: dict[str, dict[str, int]],
                 pages: dict[str, str]) -> list[bool]:
    """Per query, whether it holds a name (:data:`NAME`, not only digits) that a page it is judged against spells
    the same way and at most :data:`NAME_MAX_SHARE` of ``pages`` (id -> text) hold: the queries only an exact
    match of that name answers well, in any query language (issue 30, item 4)."""
    share: dict[str, float] = {}

    def rare(name: str) -> bool:
        if name not in share:
            share[name] = sum(name in text for text in pages.values()) / max(len(pages), 1)
        return share[name] <= NAME_MAX_SHARE

    return [any(not n.isdigit() and rare(n) and any(n in pages.get(doc, "") for doc in qrels.get(q["id"], {}))
                for n in NAME.findall(q["text"]))
            for q in queries]


def measure(data: dict[str, EvalData], transform: Transform | None, info: Any,
            query_prunes: Sequence[str] = ()) -> dict[str, Any]:
    """nDCG@10 (overall and per query language) at each α, pivot postings per query, the same two at the default α
    with the product's query pruning by each rule of ``query_prunes`` (its default first), the other-language share
    of the MLIR hits against a language-blind ranking's, and the always-on term of the English pages (``info``: the
    model's vocabularies)."""
    import torch

    from milco_os.pruning import Pruning
    from milco_os.specs import DEFAULT_QUERY_PRUNE
    from milco_os.training.gates import always_on

    query_prunes = list(dict.fromkeys((DEFAULT_QUERY_PRUNE, *query_prunes)))
    out: dict[str, Any] = {"sets": {}}
    pages: dict[int, tuple[tuple[list, list], PageStats]] = {}  # sets that share their pages share these
    sizes = (len(info.pivot_vocab), len(info.echo_vocab))
    for name, d in data.items():
        if id(d.doc_rows) not in pages:
            docs = views(d.doc_rows, transform, DOC_TOP_K)
            pages[id(d.doc_rows)] = docs, PageStats.of(docs, sizes)
        docs, stats = pages[id(d.doc_rows)]
        queries = views(d.query_rows, transform, None)
        result: dict[str, Any] = {}
        for alpha in ALPHAS:
            best = top10(queries, docs, alpha)
            metrics = ndcg(best, d)
            names = [metrics["per_query"][q["id"]]["ndcg@10"] for q, name in zip(d.queries, d.names, strict=True)
                     if name]
            result[str(alpha)] = {"ndcg@10": round(metrics["overall"]["ndcg@10"], 4),
                                  "per_language": {lang: round(m["ndcg@10"], 4)
                                                   for lang, m in metrics["per_language"].items()},
                                  "names": {"ndcg@10": round(float(np.mean(names)), 4) if names else None,
                                            "queries": len(names)}}
            if name.endswith("mlir") and alpha == 0.5:
                doc_langs = np.array(d.doc_langs)
                query_langs = np.array([q["lang"] for q in d.queries])
                result["other_language"] = round(float((doc_langs[best] != query_langs[:, None]).mean()), 4)
                result["other_language_blind"] = round(float(np.mean([1 - (doc_langs == ql).mean()
                                                                      for ql in query_langs])), 4)
        result["postings_per_query"] = postings(queries[0], stats)
        result["query_prune"] = {}
        for rule in query_prunes:
            kept = pruned(queries, stats, Pruning.parse(rule), info)
            found = ndcg(top10(kept, docs, ALPHAS[0]), d)["overall"]["ndcg@10"]
            result["query_prune"][rule] = {"ndcg@10": round(found, 4), "postings_per_query": postings(kept[0], stats)}
        out["sets"][name] = result
    english = next(d for name, d in data.items() if name.endswith("clir"))
    pivots = pages[id(english.doc_rows)][0][0]
    dense = torch.zeros(len(pivots), sizes[0])
    for r, (ids, w) in enumerate(pivots):
        dense[r, torch.from_numpy(ids)] = torch.from_numpy(w).float()
    term, share = always_on(dense, TOP)
    out["always_on"] = round(share, 4)
    out["always_on_term"] = info.pivot_vocab.tokens[term]
    out["doc_terms"] = round(float(np.mean([len(ids) for ids, _ in pivots])), 1)
    return out


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Means over the sets: nDCG@10 at each α, postings per query; the MLIR other-language share."""
    sets = result["sets"].values()
    out = {f"ndcg@10 a={a}": round(float(np.mean([s[str(a)]["ndcg@10"] for s in sets])), 4) for a in ALPHAS}
    out["postings_per_query"] = round(float(np.mean([s["postings_per_query"] for s in sets])), 1)
    for a in ALPHAS:  # the name queries of every set pooled
        names = [s[str(a)]["names"] for s in sets if s[str(a)]["names"]["queries"]]
        out[f"names ndcg@10 a={a}"] = round(sum(n["ndcg@10"] * n["queries"] for n in names)
                                            / max(sum(n["queries"] for n in names), 1), 4)
    out["name_queries"] = sum(s[str(ALPHAS[0])]["names"]["queries"] for s in sets)
    for rule in next(iter(sets))["query_prune"]:
        for key in ("ndcg@10", "postings_per_query"):
            out[f"query prune {rule} {key}"] = round(float(np.mean([s["query_prune"][rule][key] for s in sets])), 4)
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
            doc_rows=corpora[texts],
            names=name_queries(subset.queries, subset.qrels, {d["id"]: d["text"] for d in subset.corpus}))
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
        result = measure(data, transform, encoder.info)
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
    result = measure(data, None, encoder.info, QUERY_PRUNES)
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
