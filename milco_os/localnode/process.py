"""The node's process: ports, the unprivileged user it runs as when milco-os runs as root, starting and stopping
it, and plain HTTP requests to it (no client library: the node may not be one milco-os can talk to yet)."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milco_os.errors import ClusterError

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)


SERVICE_USER = "milco-os"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def http_json(
    url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None, headers: dict | None = None
) -> dict:
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310 (loopback URL)
        return json.loads(resp.read().decode("utf-8"))


#: Nodes this process started. Holding the Popen objects keeps Python from warning that a child is
#: "still running" when they are garbage-collected, and lets us reap them when they exit.
_STARTED: dict[int, Any] = {}  # pid -> subprocess.Popen


def _pid_alive(pid: int) -> bool:
    proc = _STARTED.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        del _STARTED[pid]
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is an exited child we have no Popen for
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _stop(pids: list[int], timeout: float) -> None:
    """SIGTERM every process in ``pids`` at once, then wait until all are gone (SIGKILL after ``timeout``)."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                log.warning("the node (pid %d) ignored SIGTERM for %.0fs; killing it", pid, timeout)
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
            time.sleep(0.2)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _ensure_service_user() -> tuple[int, int]:
    import pwd
    import subprocess

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and "already exists" not in proc.stderr:
            msg = f"cannot create the unprivileged user {SERVICE_USER!r} for the node: {proc.stderr.strip()}"
            raise ClusterError(msg) from None
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
