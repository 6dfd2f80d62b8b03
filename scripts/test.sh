#!/usr/bin/env bash
# The test command: lint, then every test (unit + integration) against a real local OpenSearch node
# started here on its own port and stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${MILCO_OS_TEST_PORT:-9250}

$BIN/ruff check milco_os tests bench
$BIN/milco-os models fetch   # real small weights the tests use, downloaded once into the cache
$BIN/milco-os cluster up --port "$PORT" --plugins knn   # k-NN: indices with a dense view
trap '$BIN/milco-os cluster down --port "$PORT"' EXIT
MILCO_OS_TEST_URL="http://127.0.0.1:$PORT" $BIN/pytest "$@"

# A full run tests both supported OpenSearch lines: the integration tests again against OpenSearch 3.x (Java 21+,
# found under /usr/lib/jvm). The tests that start nodes of their own (plugins, security, cluster CLI, the
# three-node cluster) stay on 2.x.
if [ $# -eq 0 ]; then
  PORT3=${MILCO_OS_TEST_PORT_3X:-9252}
  VERSION3=$($BIN/python -c "from milco_os.localnode import OPENSEARCH_3_VERSION; print(OPENSEARCH_3_VERSION)")
  $BIN/milco-os cluster up --port "$PORT3" --version "$VERSION3" --plugins knn
  trap '$BIN/milco-os cluster down --port "$PORT"; $BIN/milco-os cluster down --port "$PORT3"' EXIT
  MILCO_OS_TEST_URL="http://127.0.0.1:$PORT3" $BIN/pytest tests/integration \
    --deselect tests/integration/test_ml_commons.py --deselect tests/integration/test_secure_cluster.py \
    --deselect tests/integration/test_cluster_cli.py --deselect tests/integration/test_multinode.py
fi
