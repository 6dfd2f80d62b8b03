"""Credentials out of text that a user may see: error messages and logs may quote a URL with ``user:password@``.

A module of its own, below both :mod:`milco_os.settings` (which validates URLs) and
:mod:`milco_os.opensearch.client` (which reports connection failures), so neither imports the other for it.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def redact_urls_in(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced (errors may quote a URL)."""
    return _USERINFO.sub(r"\1***@", text)
