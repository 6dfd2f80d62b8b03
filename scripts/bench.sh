#!/usr/bin/env bash
# The benchmark command (`make bench`; not part of the tests): starts its own OpenSearch node on
# BENCH_PORT, runs every bench/ script against it (and the latency run again on an Elasticsearch node on
# BENCH_ES_PORT), stops the nodes on exit. Reports: reports/bench/ (committed;
# bench/report.py writes the docs from them), charts: results/bench/.
#   scripts/bench.sh           # the full run: 100k paragraphs, growth to 1M, the dense view, passages, SEISMIC (about four
#                              # hours on 2 cores)
#   scripts/bench.sh --quick   # a smoke run on small samples (a few minutes)
# Steps resume: a step that finished is skipped by the next run (BENCH_FRESH=1 runs every step again), and each step
# rewrites the docs' generated sections from the reports when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${BENCH_PORT:-9260}
URL="http://127.0.0.1:$PORT"
ES_PORT=${BENCH_ES_PORT:-9410}  # step 15: the same latency run on Elasticsearch
SEISMIC_PORT=${BENCH_SEISMIC_PORT:-9430}  # step 16: OpenSearch 3.6 with neural-search, SEISMIC
MODEL=${BENCH_MODEL:-milco-mini}

if [ "${1:-}" = "--quick" ]; then
  # A smoke run never replaces the committed reports the docs are written from.
  export MILCO_OS_BENCH_REPORTS=results/bench-quick BENCH_FRESH=1  # a smoke run always runs every step
  DOCS=${BENCH_DOCS:-5000}; SIZE_DOCS=5000; QUERIES=50; PAGES=64; EVAL_QUERIES=50
  ENCODE=(--batch-sizes 1,8 --queries 32 --documents 8 --min-seconds 1)
  QUANT=(--max-docs 16 --formats fp32,bf16,torchao-int8wo,ort-int8)
  MLC=(--docs 32 --queries 10)
  GROWTH=(--sizes 2000,20000 --real "$DOCS" --queries 50)
  SCALE=(--docs 64 --actors 1,2)
  DENSE=(--docs "$DOCS" --queries 50 --encode-texts 64)
  SEISMIC=(--sizes 2000,20000 --real "$DOCS" --queries 50 --repeat 1)
else
  DOCS=${BENCH_DOCS:-100000}; SIZE_DOCS=20000; QUERIES=200; PAGES=300; EVAL_QUERIES=300
  ENCODE=(--batch-sizes 1,8,32 --queries 128 --documents 32)
  QUANT=(--formats fp32,bf16,torchao-int8wo,torchao-int4wo,torchao-intx4wo,ort-int8,bnb-int8,bnb-nf4)  # int8dq: see BENCHMARKS.md §6
  MLC=(--docs 256 --queries 100)
  GROWTH=(--sizes 10000,100000,1000000 --real "$DOCS")
  SCALE=(--docs 600 --actors 1,2,4)
  DENSE=(--docs "$DOCS" --queries "$QUERIES")
  SEISMIC=(--sizes 100000,1000000 --real "$DOCS" --queries "$QUERIES")
fi

$BIN/milco-os models fetch
$BIN/milco-os cluster up --port "$PORT" --plugins knn   # k-NN: the dense view's field (step 11)
trap '$BIN/milco-os cluster down --port "$PORT"; for p in "$ES_PORT" "$SEISMIC_PORT"; do
  $BIN/milco-os cluster down --port "$p" >/dev/null 2>&1 || true; done' EXIT
started=$(date +%s)
step() { echo; echo "=== $* ($(( ($(date +%s) - started) / 60 )) min so far)"; }
# Steps resume: a finished step leaves a mark in STATE and is skipped on the next run (BENCH_FRESH=1 runs them all
# again); each step then rewrites the docs from the reports, its own section included.
STATE=${MILCO_OS_BENCH_REPORTS:-results/bench}/.done
[ "${BENCH_FRESH:-0}" = 1 ] && rm -rf "$STATE"
mkdir -p "$STATE"
todo() {  # N, TITLE: whether step N is still to run (announced either way)
  if [ -e "$STATE/$1" ]; then step "$2: done in an earlier run, skipped"; return 1; fi
  step "$2"
}
finish() {  # N: mark step N done and regenerate the docs
  touch "$STATE/$1"
  if [ -z "${MILCO_OS_BENCH_REPORTS:-}" ]; then $BIN/python bench/report.py >/dev/null; fi
}

if todo 1 "1/16 encoding throughput and memory"; then
  $BIN/python bench/encode.py --model "$MODEL" "${ENCODE[@]}"
  finish 1
fi
if todo 2 "2/16 query latency"; then
  $BIN/python bench/latency.py --url "$URL" --model "$MODEL" --docs "$DOCS" --queries "$QUERIES"
  finish 2
fi
if todo 3 "3/16 index size"; then
  $BIN/python bench/index_size.py --url "$URL" --model "$MODEL" --corpus-docs "$DOCS" --docs "$SIZE_DOCS"
  finish 3
fi
if todo 4 "4/16 ingest and reindex throughput"; then
  $BIN/python bench/throughput.py --url "$URL" --model "$MODEL" --docs "$PAGES"
  finish 4
fi
if todo 5 "5/16 quality against cost"; then
  $BIN/python bench/quality.py --url "$URL" --model "$MODEL" --max-queries "$EVAL_QUERIES"
  finish 5
fi
if todo 6 "6/16 CSPLADE quantisation study (no OpenSearch; about 10 minutes)"; then
  if $BIN/python -c "import torchao" 2>/dev/null; then
    $BIN/python bench/quantisation.py --model "${BENCH_CSPLADE_MODEL:-csplade-mini}" ${QUANT[@]+"${QUANT[@]}"} \
      ${MILCO_OS_BENCH_REPORTS:+--out "$MILCO_OS_BENCH_REPORTS/quantisation.json" --chart results/bench/quantisation.png}
  else
    echo "skipped: needs the quant extra (.venv/bin/pip install -e '.[quant]' -c constraints.txt)"
  fi
  finish 6
fi
if todo 7 "7/16 OpenSearch calling milco-os through ml-commons (its own node with plugins on port 9291)"; then
  $BIN/python bench/ml_commons.py "${MLC[@]}"
  finish 7
fi
if todo 8 "8/16 cost growth: latency and index size as the corpus grows tenfold twice (copies beyond the encoded paragraphs)"; then
  $BIN/python bench/growth.py --url "$URL" --model "$MODEL" "${GROWTH[@]}"
  finish 8
fi
if todo 9 "9/16 scaling out: ingest on 1, 2 and 4 Ray encoder actors against the single process"; then
  $BIN/python bench/scale.py --url "$URL" --model "$MODEL" "${SCALE[@]}"
  finish 9
fi
if todo 10 "10/16 the dense view: which backbone layers it reads (dev sets, no OpenSearch; about 15 minutes)"; then
  if [ "${1:-}" = "--quick" ]; then echo "skipped in --quick (it reads the four whole dev sets)"; else
    $BIN/python bench/dense_view.py
  fi
  finish 10
fi
if todo 11 "11/16 the dense view's cost: encoding, index size, fused latency against sparse only and BM25"; then
  $BIN/python bench/dense_cost.py --url "$URL" --model "$MODEL" "${DENSE[@]}"
  finish 11
fi
if todo 12 "12/16 passages: how a document scores from its passages (dev sets, whole pages, no OpenSearch; about 50 minutes the first time)"; then
  if [ "${1:-}" = "--quick" ]; then echo "skipped in --quick (it encodes the whole pages of the dev sets)"; else
    $BIN/python bench/passages.py
  fi
  finish 12
fi
if todo 13 "13/16 passages' cost: encoding, index size and latency against the merged layout and BM25 (the encodings of step 12)"; then
  if [ "${1:-}" = "--quick" ]; then echo "skipped in --quick (it reads step 12's encodings)"; else
    $BIN/python bench/passages_cost.py --url "$URL" --model "$MODEL" --queries "$QUERIES"
  fi
  finish 13
fi
if todo 14 "14/16 start-up: --help, version, one cold search, the interactive mode's further queries"; then
  $BIN/python bench/startup.py --url "$URL" --model "$MODEL"
  finish 14
fi
if todo 15 "15/16 on Elasticsearch: query latency against its own BM25 (20,000 paragraphs, as §8's OpenSearch run)"; then
  $BIN/milco-os cluster up --engine elasticsearch --port "$ES_PORT"
  $BIN/python bench/latency.py --url "http://127.0.0.1:$ES_PORT" --model "$MODEL" --docs "$SIZE_DOCS" \
    --queries "$QUERIES" --concurrency 1,4
  $BIN/milco-os cluster down --port "$ES_PORT"
  finish 15
fi
if todo 16 "16/16 SEISMIC on OpenSearch 3.6 against the exact query and BM25 at 100k and 1M documents (about an hour)"; then
  $BIN/milco-os cluster up --version 3.6.0 --plugins neural-search --heap 4g --port "$SEISMIC_PORT"
  # Resumes by size too: a size already in its report is not measured again, unless BENCH_FRESH=1.
  $BIN/python bench/seismic.py --url "http://127.0.0.1:$SEISMIC_PORT" --model "$MODEL" "${SEISMIC[@]}" \
    $([ "${BENCH_FRESH:-0}" = 1 ] && echo --fresh)
  $BIN/milco-os cluster down --port "$SEISMIC_PORT"
  finish 16
fi
step "done: reports in ${MILCO_OS_BENCH_REPORTS:-reports/bench}/ (bench/report.py writes them into the docs)"
echo "Targets:"
$BIN/python bench/report.py --targets
