"""Values JSON cannot express come back in the documented way, never as a crash."""

from __future__ import annotations

import math

import pytest

from clambot_tools import Sandbox


def test_non_finite_numbers_and_negative_zero(sandbox: Sandbox) -> None:
    v = sandbox.run("[NaN, Infinity, -Infinity, -0, 0, 1.5, 2**53 + 2]").value
    assert math.isnan(v[0]) and v[1] == math.inf and v[2] == -math.inf
    assert v[3] == 0 and math.copysign(1, v[3]) == -1
    assert v[4:] == [0, 1.5, 2**53 + 2]


def test_bigint_becomes_int(sandbox: Sandbox) -> None:
    assert sandbox.run("2n ** 100n").value == 2**100
    huge = sandbox.run("10n ** 5000n").value
    assert huge == "1" + "0" * 5000


def test_undefined(sandbox: Sandbox) -> None:
    assert sandbox.run("undefined").value is None
    assert sandbox.run("[undefined, 1]").value == [None, 1]
    assert sandbox.run("({a: undefined, b: 1})").value == {"b": 1}


def test_collections_dates_errors(sandbox: Sandbox) -> None:
    v = sandbox.run(
        "({m: new Map([[1, 'a'], ['k', [2]]]), s: new Set([3, 3, 4]),"
        " t: new Uint8Array([5, 6]), d: new Date(0), e: new RangeError('bad')})"
    ).value
    assert v["m"] == {"1": "a", "k": [2]}
    assert v["s"] == [3, 4]
    assert v["t"] == [5, 6]
    assert v["d"] == "1970-01-01T00:00:00.000Z"
    assert v["e"]["name"] == "RangeError" and v["e"]["message"] == "bad"


def test_strings_are_lossless(sandbox: Sandbox) -> None:
    v = sandbox.run(r"['h\u00e9llo \u{1F44B}', 'a\u0000b', '\ud800', 'quote\"back\\slash\n']").value
    assert v == ["h\u00e9llo \U0001f44b", "a\x00b", "\ud800", 'quote"back\\slash\n']


@pytest.mark.parametrize(
    ("code", "where"),
    [
        ("({a: {b: [1, () => 2]}})", "$.a.b[1]"),
        ("({s: Symbol('x')})", "$.s"),
        ("[Promise.resolve(1)]", "$[0]"),
        ("const o = {k: {}}; o.k.self = o; o", "$.k.self"),
    ],
)
def test_unconvertible_values_are_runtime_errors_naming_the_place(
    sandbox: Sandbox, code: str, where: str
) -> None:
    res = sandbox.run(code)
    assert not res.ok and res.error is not None
    assert res.error.kind == "runtime"
    assert res.error.name == "TypeError"
    assert where in res.error.message


def test_top_level_function_is_an_error(sandbox: Sandbox) -> None:
    res = sandbox.run("function f() {}\nf")
    assert res.error is not None and res.error.kind == "runtime"
    assert "a function" in res.error.message


def test_to_json_is_honoured_once(sandbox: Sandbox) -> None:
    v = sandbox.run("({x: {toJSON() { return {y: {toJSON() { return 7 }}} }}})").value
    assert v == {"x": {"y": 7}}


def test_getter_throwing_during_conversion(sandbox: Sandbox) -> None:
    res = sandbox.run("({get a() { throw new Error('no reading') }})")
    assert res.error is not None and res.error.kind == "runtime"
    assert res.error.message == "no reading"


def test_large_doubles_stay_the_same_double(sandbox: Sandbox) -> None:
    v = sandbox.run("[2 ** 53 - 1, 2 ** 60, 4.771305001654075e+16, 1e21, 0.1]").value
    assert v[0] == 2**53 - 1 and isinstance(v[0], int)
    assert v[1] == float(2**60) and isinstance(v[1], float)
    assert v[2] == 4.771305001654075e16
    assert v[3:] == [1e21, 0.1]


def test_strings_built_by_concatenation(sandbox: Sandbox) -> None:
    # QuickJS keeps such strings as ropes until they are flattened
    code = "let s = ''; for (let i = 0; i < 2000; i++) s += 'abcdefghij'; [s.length, s]"
    length, text = sandbox.run(code).value
    assert length == 20000 and text == "abcdefghij" * 2000
    assert sandbox.run("let t = 'x'; for (let i = 0; i < 12; i++) t = t + t; t").value == (
        "x" * 4096
    )
