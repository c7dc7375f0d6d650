"""Property-based checks of the boundary: JSON round-trips unchanged, nothing crashes."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clambot_tools import ConfigError, Limits, Policy, RunResult, Sandbox, binding

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda f: f != 0 or math.copysign(1, f) > 0
    )
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


def _echo(**args: Any) -> Any:
    return args


SB = Sandbox(bindings=[binding(_echo, name="echo")], limits=Limits(timeout_s=5))
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: ints and floats compare by value (JS has one number type)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@SETTINGS
@given(json_values)
def test_json_round_trips_js_to_python_to_js(value: Any) -> None:
    literal = json.dumps(value)
    res = SB.run(
        f"const v = {literal};\n"
        "const back = await tools.echo({v});\n"
        "[JSON.stringify(back.v) === JSON.stringify(v), back.v]"
    )
    assert res.ok, res.error
    same_in_js, seen = res.value
    assert same_in_js is True
    assert _same(seen, value)


@SETTINGS
@given(json_values)
def test_python_value_reaches_js_unchanged(value: Any) -> None:
    def give() -> Any:
        return value

    sb = Sandbox(bindings=[give])
    res = sb.run(f"JSON.stringify(await tools.give()) === JSON.stringify({json.dumps(value)})")
    assert res.value is True


NON_JSON_JS = st.sampled_from(
    [
        "undefined",
        "NaN",
        "-0",
        "1n << 70n",
        "Symbol('s')",
        "() => 1",
        "new Map([[{}, 1]])",
        "new Set([NaN])",
        "new Proxy({}, {ownKeys() { throw 1 }})",
        "Promise.resolve(1)",
        "new Date(NaN)",
        "new Uint8Array(3)",
        "new WeakMap()",
        "Object.create(null)",
        "(() => { const o = {}; o.o = o; return o })()",
        "new Error('e')",
        "globalThis",
        "{ get x() { throw new Error('g') } }",
        "[,,1]",
        "'\\ud800'",
        "tools",
        "console",
    ]
)


@SETTINGS
@given(st.lists(NON_JSON_JS, min_size=1, max_size=4), st.booleans())
def test_non_json_values_never_crash_the_host(parts: list[str], via_tool: bool) -> None:
    expr = "[" + ", ".join(parts) + "]"
    code = f"await tools.echo({{v: {expr}}})" if via_tool else f"({expr})"
    res = SB.run(code)
    assert isinstance(res, RunResult)
    if not res.ok:
        assert res.error is not None and res.error.kind in ("runtime", "binding_failed")
    assert SB.run("1 + 1").value == 2


@SETTINGS
@given(st.text(min_size=1, max_size=40))
def test_arbitrary_binding_names_never_crash_the_host(name: str) -> None:
    try:
        b = binding(_echo, name=name)
    except ConfigError:
        assert "\x00" in name
        return
    sb = Sandbox(bindings=[b], policy=Policy(allow=[name]))
    res = sb.run(f"await tools[{json.dumps(name)}]({{ok: 1}})")
    assert res.ok and res.value == {"ok": 1}, res.error
