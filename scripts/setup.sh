#!/usr/bin/env bash
# Set up everything milco-os needs on a fresh machine: system tools (JDK 11+, Maven), a virtual
# environment and the pinned Python dependencies. Safe to run again.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}
cd "$(dirname "$0")/.."

need_java() {
  command -v java >/dev/null 2>&1 || return 0
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [ "${major:-0}" -lt 11 ]
}
missing=()
need_java && missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "setup: please install ${missing[*]} (a JDK 11+ and Maven run the local OpenSearch)" >&2
    exit 1
  fi
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: milco-os needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# constraints.txt pins every package to the versions the tests ran with. setuptools announces every editable
# install with a multi-line "Editable installation." warning about its own mechanism, which recent pip (26) shows even
# with -q; that one warning (matched by its first words) is dropped, every other one still shows.
PYTHONWARNINGS="ignore:Editable installation" "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
echo "setup: done ($("$VENV/bin/milco-os" version))"
