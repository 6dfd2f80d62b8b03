from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from milco_os.keys import decode_key, encode_key


@pytest.mark.parametrize("token", ["heart", "u.s.", "##.", ".net", "▁Hund", "100%", "%2E", "心", "🙂", "a.b%c."])
def test_round_trip_and_no_dots(token: str) -> None:
    key = encode_key(token)
    assert "." not in key
    assert decode_key(key) == token


def test_readable_keys_stay_unchanged() -> None:
    assert encode_key("heart") == "heart"
    assert encode_key("##ing") == "##ing"
    assert encode_key("u.s.") == "u%2Es%2E"


@given(st.text(min_size=1))
def test_round_trip_any_text(token: str) -> None:
    assert decode_key(encode_key(token)) == token
    assert "." not in encode_key(token)


def test_invalid_escape_is_reported() -> None:
    with pytest.raises(ValueError, match="invalid escape"):
        decode_key("a%41")


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_key("")
