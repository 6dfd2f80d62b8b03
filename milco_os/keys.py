"""The term-key contract: vocabulary entry <-> ``rank_features`` feature name.

OpenSearch addresses a feature as ``<field>.<key>`` in a ``rank_feature`` query and splits that path at
the last dot, so a key must not contain ``.``. Vocabularies do contain dots (``u.s.``, ``##.``,
``▁.net``), so every key is escaped: ``%`` becomes ``%25`` and ``.`` becomes ``%2E``. Nothing else
changes, so keys stay readable (``heart``, ``##ing``, ``▁Hund``, ``心``). The escaping is reversible and
its version is recorded in each index's ``_meta``; change the scheme only together with the version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from milco_os.types import SparseVector

KEY_SCHEME_VERSION = 1


def stored_terms(vec: SparseVector, keys: str = "names") -> dict[str, float]:
    """``{key as the index stores it: weight}``, largest weight first: the escaped vocabulary entry, or with
    ``keys="ids"`` (the pivot view of a SEISMIC index, :attr:`milco_os.layout.Layout.pivot_keys`) its vocabulary
    id as a decimal string."""
    if keys == "ids":
        s = vec.sorted()
        return {str(int(i)): float(w) for i, w in zip(s.ids, s.weights, strict=True)}
    return {encode_key(token): weight for token, weight in vec.to_terms().items()}


def encode_key(token: str) -> str:
    """Vocabulary entry -> feature name (``%`` first, so an escaped dot is never re-escaped)."""
    if not token:
        msg = "cannot encode an empty vocabulary entry as a feature name"
        raise ValueError(msg)
    return token.replace("%", "%25").replace(".", "%2E")


def decode_key(key: str) -> str:
    """Feature name -> vocabulary entry; the inverse of :func:`encode_key`."""
    out: list[str] = []
    i = 0
    while i < len(key):
        if key[i] == "%":
            code = key[i + 1 : i + 3]
            if code == "25":
                out.append("%")
            elif code.upper() == "2E":
                out.append(".")
            else:
                msg = f"invalid escape {key[i:i + 3]!r} in feature name {key!r}"
                raise ValueError(msg)
            i += 3
        else:
            out.append(key[i])
            i += 1
    return "".join(out)
