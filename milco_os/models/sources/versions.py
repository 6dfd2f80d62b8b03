"""Shipped versions of the built-in models assembled from a committed delta (milco-mini, csplade-mini).

Each version is a directory ``milco_os/models/<model>/<N>/`` (N = 1, 2, ...) holding one delta: its manifest, its
trained weights and its training logs. A new delta is added as the next number and the old ones stay, so an index
keeps working with the version that built it (deltas are tens of MB, the bases come from packages). A model
reference ``name@N`` pins a version; the bare name means the newest.

An index record that names a built-in model without a version was written before versions existed; the only delta
of that time is version :data:`FIRST_VERSION` (the fingerprint in the record still decides whether it fits).
"""

from __future__ import annotations

from pathlib import Path

from milco_os.errors import ModelError

SEPARATOR = "@"
FIRST_VERSION = "1"
#: What marks a version directory as a delta (every delta has one).
MANIFEST_FILE = "manifest.json"


def split_ref(model: str) -> tuple[str, str | None]:
    """``milco-mini@2`` -> (``milco-mini``, ``2``); anything without ``@`` -> (model, None). A version that is
    not a number is a one-line ModelError (call this for built-in names only: a directory may contain ``@``)."""
    name, sep, version = model.partition(SEPARATOR)
    if not sep:
        return model, None
    if not version.isdigit():
        msg = f"model {model!r}: a version after {SEPARATOR!r} is a number (e.g. {name}{SEPARATOR}{FIRST_VERSION})"
        raise ModelError(msg)
    return name, str(int(version))


def pinned_name(name: str, version: str) -> str:
    return f"{name}{SEPARATOR}{version}"


def versions(root: Path) -> list[str]:
    """The versions under ``root``, oldest first (directories named by a number, holding a manifest)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if p.name.isdigit() and (p / MANIFEST_FILE).is_file()]
    return sorted(found, key=int)


def version_dir(root: Path, name: str, version: str | None) -> tuple[Path, str]:
    """(delta directory, version) of ``name`` (the newest when ``version`` is None); a one-line ModelError naming
    the shipped versions when there is no such version."""
    shipped = versions(root)
    if not shipped:
        msg = f"model {name!r}: no trained delta is shipped under {root}"
        raise ModelError(msg)
    chosen = shipped[-1] if version is None else version
    if chosen not in shipped:
        listed = ", ".join(pinned_name(name, v) for v in shipped)
        msg = f"model {pinned_name(name, chosen)!r}: no such version; shipped: {listed}"
        raise ModelError(msg)
    return Path(root) / chosen, chosen
