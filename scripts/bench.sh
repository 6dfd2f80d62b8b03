#!/usr/bin/env bash
# The benchmark command (`make bench`; not part of the tests): starts its own OpenSearch node on
# BENCH_PORT, runs every bench/ script against it (and the latency run again on an Elasticsearch node on
# BENCH_ES_PORT), stops the nodes on exit. Reports: reports/bench/ (committed;
# bench/report.py writes the docs from them), charts: results/bench/.
#   scripts/bench.sh           # the full run: 100k paragraphs, growth to 1M, the dense view, passages (about three
#                              # hours on 2 cores)
#   scripts/bench.sh --quick   # a smoke run on small samples (a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${BENCH_PORT:-9260}
URL="http://127.0.0.1:$PORT"
ES_PORT=${BENCH_ES_PORT:-9410}  # step 15: the same latency run on Elasticsearch
MODEL=${BENCH_MODEL:-milco-mini}

if [ "${1:-}" = "--quick" ]; then
  # A smoke run never replaces the committed reports the docs are written from.
  export MILCO_OS_BENCH_REPORTS=results/bench-quick
  DOCS=${BENCH_DOCS:-5000}; SIZE_DOCS=5000; QUERIES=50; PAGES=64; EVAL_QUERIES=50
  ENCODE=(--batch-sizes 1,8 --queries 32 --documents 8 --min-seconds 1)
  QUANT=(--max-docs 16 --formats fp32,bf16,torchao-int8wo,ort-int8)
  MLC=(--docs 32 --queries 10)
  GROWTH=(--sizes 2000,20000 --real "$DOCS" --queries 50)
  SCALE=(--docs 64 --actors 1,2)
  DENSE=(--docs "$DOCS" --queries 50 --encode-texts 64)
else
  DOCS=${BENCH_DOCS:-100000}; SIZE_DOCS=20000; QUERIES=200; PAGES=300; EVAL_QUERIES=300
  ENCODE=(--batch-sizes 1,8,32 --queries 128 --documents 32)
  QUANT=(--formats fp32,bf16,torchao-int8wo,torchao-int4wo,torchao-intx4wo,ort-int8,bnb-int8,bnb-nf4)  # int8dq: see BENCHMARKS.md §6
  MLC=(--docs 256 --queries 100)
  GROWTH=(--sizes 10000,100000,1000000 --real "$DOCS")
  SCALE=(--docs 600 --actors 1,2,4)
  DENSE=(--docs "$DOCS" --queries "$QUERIES")
fi

$BIN/milco-os models fetch
$BIN/milco-os cluster up --port "$PORT" --plugins knn   # k-NN: the dense view's field (step 11)
trap '$BIN/milco-os cluster down --port "$PORT"; $BIN/milco-os cluster down --port "$ES_PORT" >/dev/null 2>&1 || true' EXIT
started=$(date +%s)
step() { echo; echo "=== $* ($(( ($(date +%s) - started) / 60 )) min so far)"; }

step "1/15 encoding throughput and memory"
$BIN/python bench/encode.py --model "$MODEL" "${ENCODE[@]}"
step "2/15 query latency"
$BIN/python bench/latency.py --url "$URL" --model "$MODEL" --docs "$DOCS" --queries "$QUERIES"
step "3/15 index size"
$BIN/python bench/index_size.py --url "$URL" --model "$MODEL" --corpus-docs "$DOCS" --docs "$SIZE_DOCS"
step "4/15 ingest and reindex throughput"
$BIN/python bench/throughput.py --url "$URL" --model "$MODEL" --docs "$PAGES"
step "5/15 quality against cost"
$BIN/python bench/quality.py --url "$URL" --model "$MODEL" --max-queries "$EVAL_QUERIES"
step "6/15 CSPLADE quantisation study (no OpenSearch; about 10 minutes)"
if $BIN/python -c "import torchao" 2>/dev/null; then
  $BIN/python bench/quantisation.py --model "${BENCH_CSPLADE_MODEL:-csplade-mini}" ${QUANT[@]+"${QUANT[@]}"} \
    ${MILCO_OS_BENCH_REPORTS:+--out "$MILCO_OS_BENCH_REPORTS/quantisation.json" --chart results/bench/quantisation.png}
else
  echo "skipped: needs the quant extra (.venv/bin/pip install -e '.[quant]' -c constraints.txt)"
fi
step "7/15 OpenSearch calling milco-os through ml-commons (its own node with plugins on port 9291)"
$BIN/python bench/ml_commons.py "${MLC[@]}"
step "8/15 cost growth: latency and index size as the corpus grows tenfold twice (copies beyond the encoded paragraphs)"
$BIN/python bench/growth.py --url "$URL" --model "$MODEL" "${GROWTH[@]}"
step "9/15 scaling out: ingest on 1, 2 and 4 Ray encoder actors against the single process"
$BIN/python bench/scale.py --url "$URL" --model "$MODEL" "${SCALE[@]}"
step "10/15 the dense view: which backbone layers it reads (dev sets, no OpenSearch; about 15 minutes)"
if [ "${1:-}" = "--quick" ]; then echo "skipped in --quick (it reads the four whole dev sets)"; else
  $BIN/python bench/dense_view.py
fi
step "11/15 the dense view's cost: encoding, index size, fused latency against sparse only and BM25"
$BIN/python bench/dense_cost.py --url "$URL" --model "$MODEL" "${DENSE[@]}"
step "12/15 passages: how a document scores from its passages (dev sets, whole pages, no OpenSearch; about 50 minutes the first time)"
if [ "${1:-}" = "--quick" ]; then echo "skipped in --quick (it encodes the whole pages of the dev sets)"; else
  $BIN/python bench/passages.py
fi
step "13/15 passages' cost: encoding, index size and latency against the merged layout and BM25 (the encodings of step 12)"
if [ "${1:-}" = "--quick" ]; then echo "skipped in --quick (it reads step 12's encodings)"; else
  $BIN/python bench/passages_cost.py --url "$URL" --model "$MODEL" --queries "$QUERIES"
fi
step "14/15 start-up: --help, version, one cold search, the interactive mode's further queries"
$BIN/python bench/startup.py --url "$URL" --model "$MODEL"
step "15/15 on Elasticsearch: query latency against its own BM25 (20,000 paragraphs, as §8's OpenSearch run)"
$BIN/milco-os cluster up --engine elasticsearch --port "$ES_PORT"
$BIN/python bench/latency.py --url "http://127.0.0.1:$ES_PORT" --model "$MODEL" --docs "$SIZE_DOCS" \
  --queries "$QUERIES" --concurrency 1,4
$BIN/milco-os cluster down --port "$ES_PORT"
step "done: reports in ${MILCO_OS_BENCH_REPORTS:-reports/bench}/ (bench/report.py writes them into the docs)"
echo "Targets:"
$BIN/python bench/report.py --targets
