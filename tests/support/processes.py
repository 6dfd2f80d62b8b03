"""The processes of a local node, read from /proc (what the tests check a node start or stop against)."""

from __future__ import annotations

from pathlib import Path


def node_processes(main_class: str, path_part: str) -> list[str]:
    """Command lines of the live processes running ``main_class`` with ``path_part`` on their command line (a node
    directory: the config path names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if main_class in cmd and path_part in cmd:
            found.append(cmd)
    return found
