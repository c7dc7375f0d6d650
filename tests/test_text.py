"""_text: text a person reads is inert, and JSON always encodes, for any data."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clambot_tools._text import _IterativeEncoder, json_text, visible

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _expected(v: Any) -> Any:
    """What the JSON of `v` reads back as: U+FFFD for lone surrogates, null for NaN."""
    if isinstance(v, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_expected(x) for x in v]
    if isinstance(v, dict):
        return {_expected(k): _expected(x) for k, x in v.items()}
    return v


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_json_text_reads_back_and_shows_no_control_character(v: Any) -> None:
    for ascii_only in (False, True):
        text, _ = json_text(v, ascii_only=ascii_only)
        text.encode("utf-8")  # always encodes
        assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in text)
        assert json.loads(text) == _expected(v)
        assert not ascii_only or text.isascii()


@settings(max_examples=200, deadline=None)
@given(_json_values.filter(lambda v: "nan" not in repr(v) and "inf" not in repr(v)))
def test_the_iterative_encoder_writes_what_json_dumps_writes(v: Any) -> None:
    for indent in (None, 2):
        assert _IterativeEncoder(indent).encode(v) == json.dumps(
            v, ensure_ascii=False, indent=indent
        )


def test_any_depth_is_written() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    text, _ = json_text(deep, indent=None)
    assert text == "[" * 100_000 + "1" + "]" * 100_000


def test_visible_escapes_what_could_act_on_a_terminal() -> None:
    text = "a\x1b[2J\x9b1m\u202e\U000e0041\ud800\tb\nc"
    assert visible(text) == "a\\x1b[2J\\x9b1m\\u202e\\U000e0041\\ud800\tb\nc"
    assert visible("x\ny", keep_newlines=False) == "x\\ny"
