#!/usr/bin/env bash
# The test command: lint, then every test (unit + integration) against real local nodes started here on their own
# ports and stopped on exit, whatever happens: OpenSearch 2.x, then the Elasticsearch suite (the tests marked
# `elasticsearch`), then the integration tests again on OpenSearch 3.x with neural-search, SEISMIC's among them (the
# tests marked `seismic`). Each suite prints its own time.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${MILCO_OS_TEST_PORT:-9250}
ES_PORT=${MILCO_OS_TEST_ES_PORT:-9254}
PORTS=()
stop_nodes() { for p in "${PORTS[@]}"; do $BIN/milco-os cluster down --port "$p" || true; done; }
trap stop_nodes EXIT
up() {  # PORT, then `cluster up` options
  local port=$1; shift
  PORTS+=("$port")
  $BIN/milco-os cluster up --port "$port" "$@"
}
suite() {  # NAME, then the command
  local name=$1 start=$SECONDS; shift
  "$@"
  echo "== $name: passed in $((SECONDS - start)) s"
}

$BIN/ruff check milco_os tests bench
$BIN/milco-os models fetch   # real small weights the tests use, downloaded once into the cache
up "$PORT" --plugins knn   # k-NN: indices with a dense view
up "$ES_PORT" --engine elasticsearch
export MILCO_OS_TEST_URL="http://127.0.0.1:$PORT" MILCO_OS_TEST_ES_URL="http://127.0.0.1:$ES_PORT"
if [ $# -gt 0 ]; then  # the tests asked for, on both engines
  $BIN/pytest "$@"
  exit
fi
OS_VERSION=$($BIN/python -c "from milco_os.localnode import OPENSEARCH_VERSION; print(OPENSEARCH_VERSION)")
suite "OpenSearch $OS_VERSION (unit, integration, faults)" $BIN/pytest -m "not elasticsearch and not seismic"
suite "Elasticsearch (integration, faults)" $BIN/pytest tests/integration tests/faults -m elasticsearch

# The integration tests again against OpenSearch 3.x (Java 21+, found under /usr/lib/jvm) with neural-search (and
# the knn, ml-commons and job-scheduler plugins it needs), which also serves the SEISMIC tests; the ml-commons tests
# start a 3.x node of their own with the same plugins. The other tests that start nodes of their own (security,
# cluster CLI, the three-node cluster) stay on 2.x.
PORT3=${MILCO_OS_TEST_PORT_3X:-9252}
VERSION3=$($BIN/python -c "from milco_os.localnode import OPENSEARCH_3_VERSION; print(OPENSEARCH_3_VERSION)")
up "$PORT3" --version "$VERSION3" --plugins neural-search
suite "OpenSearch $VERSION3 (integration, SEISMIC, ml-commons)" env MILCO_OS_TEST_URL="http://127.0.0.1:$PORT3" \
  MILCO_OS_TEST_SEISMIC_URL="http://127.0.0.1:$PORT3" MILCO_OS_TEST_ML_VERSION="$VERSION3" \
  $BIN/pytest tests/integration -m "not elasticsearch" --deselect tests/integration/test_secure_cluster.py \
  --deselect tests/integration/test_cluster_cli.py --deselect tests/integration/test_multinode.py \
  --deselect tests/integration/test_elasticsearch_node.py
