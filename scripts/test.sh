#!/usr/bin/env bash
# The test command: lint, then every test (unit + integration) against a real local OpenSearch node
# started here on its own port and stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${MILCO_OS_TEST_PORT:-9250}

$BIN/ruff check milco_os tests bench
$BIN/milco-os models fetch   # real small weights the tests use, downloaded once into the cache
$BIN/milco-os cluster up --port "$PORT"
trap '$BIN/milco-os cluster down --port "$PORT"' EXIT
MILCO_OS_TEST_URL="http://127.0.0.1:$PORT" $BIN/pytest "$@"
