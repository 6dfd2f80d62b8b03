#!/usr/bin/env bash
# The CSPLADE evaluation of docs/csplade.md: csplade-mini's three variants against BM25, splade-tiny and
# milco-mini's pivot view, on the English known-item set (libreoffice-en, test split), through OpenSearch.
# Needs the trained deltas results/train/csplade-<variant><suffix> (milco-os train csplade
# configs/train/csplade-<variant><suffix>.toml), one suffix per variant in CSPLADE_RUNS (variant:suffix, the runs
# whose configs' steps bench/report.py prints; its CSPLADE_EVAL_RUNS names the same): each is assembled into the
# cache and linked as results/models/csplade-<variant> so the report names the variant. The report is kept as
# reports/eval/csplade-libreoffice-en-test.json (bench/report.py reads it), its chart as docs/eval-en-test.png.
# Starts its own node on EVAL_PORT and stops it on exit. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${EVAL_PORT:-9270}
OUT=${EVAL_OUT:-results/eval/csplade-libreoffice-en-test}
RUNS=${CSPLADE_RUNS:-causal:-terms-long echo:-terms-long-dfq bi:-terms-long}

mkdir -p results/models
models=()
for run in $RUNS; do
  v=${run%%:*}
  built=$($BIN/milco-os models build csplade-mini --delta "results/train/csplade-$v${run#*:}")
  ln -sfn "${built#csplade-mini: }" "results/models/csplade-$v"
  models+=(--model "results/models/csplade-$v")
done
$BIN/milco-os cluster up --port "$PORT"
trap '$BIN/milco-os cluster down --port "$PORT"' EXIT
# alpha 1: the pivot view only (milco-mini's English view; splade-tiny and CSPLADE have no other view).
$BIN/milco-os eval --url "http://127.0.0.1:$PORT" --dataset libreoffice-en --split test --systems bm25,sparse \
  "${models[@]}" --model splade-tiny --model milco-mini --alpha 1.0 --doc-prune none --out "$OUT"
cp "$OUT/report.json" reports/eval/csplade-libreoffice-en-test.json
cp "$OUT/ndcg@10.png" docs/eval-en-test.png
