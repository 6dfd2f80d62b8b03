"""`milco-os cluster up|status|down` as a user runs them, on a port of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import node_processes

PORT = 9262


def milco_os(*args: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MILCO_OS_CACHE_DIR=str(cache_dir))
    cmd = [sys.executable, "-m", "milco_os.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def opensearch_processes(port: int) -> list[str]:
    """Command lines of OpenSearch processes configured for ``port``'s node directory."""
    return node_processes("org.opensearch.bootstrap.OpenSearch", f"/nodes/{port}/config")


def test_up_status_down(cache_dir: Path) -> None:
    up = milco_os("cluster", "up", "--port", str(PORT), "--heap", "512m", cache_dir=cache_dir)
    try:
        assert up.returncode == 0, up.stderr
        url = up.stdout.strip().splitlines()[-1]
        assert url == f"http://127.0.0.1:{PORT}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            root = json.loads(resp.read())
        assert root["version"]["distribution"] == "opensearch"
        assert root["version"]["number"].count(".") == 2

        status = milco_os("cluster", "status", "--port", str(PORT), cache_dir=cache_dir)
        assert status.returncode == 0, status.stdout + status.stderr
        assert root["version"]["number"] in status.stdout
        assert "green" in status.stdout or "yellow" in status.stdout

        again = milco_os("cluster", "up", "--port", str(PORT), cache_dir=cache_dir)
        assert again.returncode == 0 and again.stdout.strip().endswith(url)  # idempotent
        assert len(opensearch_processes(PORT)) == 1
    finally:
        down = milco_os("cluster", "down", "--port", str(PORT), cache_dir=cache_dir)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert opensearch_processes(PORT) == []
    after = milco_os("cluster", "status", "--port", str(PORT), cache_dir=cache_dir)
    assert after.returncode == 1
    assert "no milco-os OpenSearch node is running" in after.stdout


def test_port_in_use_is_reported(cache_dir: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        result = milco_os("cluster", "up", "--port", str(port), cache_dir=cache_dir)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr


@pytest.mark.parametrize("heap", ["lots", "1.5g"])
def test_bad_heap_is_refused(cache_dir: Path, heap: str) -> None:
    result = milco_os("cluster", "up", "--port", "9263", "--heap", heap, cache_dir=cache_dir)
    assert result.returncode == 1
    assert "--heap" in result.stderr
