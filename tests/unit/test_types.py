"""The vocabulary type (pure): byte-level entries read as words, index keys unchanged."""

from __future__ import annotations

import numpy as np

from milco_os.types import SparseVector, Vocab


def test_byte_level_entries_read_as_words_and_marked_pieces() -> None:
    words = tuple(f"\u0120w{i}" for i in range(20))
    vocab = Vocab("byte-bpe", (*words, "table", "\u0120table", "\u00c3\u00bc", "\u0120Z\u00c3\u00bcrich", "\u0120",
                               "\u010a", "\u00c3"))
    assert vocab.byte_level
    assert [vocab.readable(t) for t in vocab.tokens[20:]] == ["##table", "table", "##ü", "Zürich", "␣", "##\\n",
                                                              "##\\xc3"]
    # Two entries, two readings: a word and the same letters inside a word stay apart.
    assert len({vocab.readable(t) for t in vocab.tokens}) == len(vocab.tokens)
    vec = SparseVector(np.array([21, 20]), np.array([2.0, 1.0], dtype=np.float32), vocab)
    assert vec.readable_terms() == {"table": 2.0, "##table": 1.0}
    assert vec.to_terms() == {"\u0120table": 2.0, "table": 1.0}  # what the index stores is unchanged
    wordpiece = Vocab("bert", ("heart", "##ing", "tea"))
    assert not wordpiece.byte_level and wordpiece.readable("##ing") == "##ing"

