"""Binding results beyond JSON: encoded as pydantic's JSON mode does; big integers refused."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from clambot_tools import Sandbox, binding


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass
class Parcel:
    sent: datetime.date
    weight: decimal.Decimal


class Quote(BaseModel):
    id: uuid.UUID
    at: datetime.datetime
    tags: set[str]


CASES: list[tuple[str, Any, Any]] = [
    ("datetime", datetime.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
    (
        "aware_datetime",
        datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
        "2024-05-06T07:08:09Z",
    ),
    ("date", datetime.date(2024, 5, 6), "2024-05-06"),
    ("time", datetime.time(7, 8), "07:08:00"),
    ("decimal", decimal.Decimal("12.50"), "12.50"),
    ("uuid", uuid.UUID(int=7), "00000000-0000-0000-0000-000000000007"),
    ("enum", Size.LARGE, "l"),
    ("int_enum", Level.LOW, 1),
    ("bytes", b"hello", "hello"),
    ("set", {3}, [3]),
    ("frozenset", frozenset({"a"}), ["a"]),
    ("tuple", (1, "a"), [1, "a"]),
    ("dataclass", Parcel(datetime.date(2024, 1, 2), decimal.Decimal("1.5")), None),
    ("pydantic", Quote(id=uuid.UUID(int=1), at=datetime.datetime(2024, 1, 2), tags={"x"}), None),
    ("nested", {"when": [datetime.date(2024, 1, 2)], "n": float("nan")}, None),
]
EXPECTED_OBJECTS = {
    "dataclass": {"sent": "2024-01-02", "weight": "1.5"},
    "pydantic": {
        "id": "00000000-0000-0000-0000-000000000001",
        "at": "2024-01-02T00:00:00",
        "tags": ["x"],
    },
    "nested": {"when": ["2024-01-02"], "n": None},
}


@pytest.mark.parametrize(("name", "value", "expected"), CASES, ids=[c[0] for c in CASES])
def test_results_are_encoded_as_pydantic_json_mode(name: str, value: Any, expected: Any) -> None:
    sb = Sandbox(bindings=[binding(lambda: value, name="get")])
    res = sb.run("await tools.get()")
    assert res.ok, res.error
    assert res.value == (EXPECTED_OBJECTS[name] if expected is None else expected)
    # and the script sees the same: a string is a string, a list a list
    assert sb.run("const v = await tools.get(); JSON.stringify(v)").ok


def test_bytes_that_are_not_text_fail_with_a_reason() -> None:
    sb = Sandbox(bindings=[binding(lambda: b"\xff\xfe", name="raw")])
    res = sb.run("try { await tools.raw() } catch (e) { e.message }")
    assert "not UTF-8 text" in res.value and "base64" in res.value


def test_unknown_objects_still_fail_with_a_reason() -> None:
    sb = Sandbox(bindings=[binding(lambda: object(), name="odd")])
    res = sb.run("await tools.odd()")
    assert res.error is not None and res.error.kind == "binding_failed"
    assert "not JSON data" in res.error.message


def test_integers_past_2_53_are_refused_not_changed() -> None:
    big = 2**53 + 1  # as a JS number it would silently become 2**53
    exact = {"max": 2**53 - 1, "neg": -(2**53 - 1), "e20": 10**20, "two53": 2**53}
    sb = Sandbox(
        bindings=[
            binding(lambda: exact, name="edge"),
            binding(lambda: {"rows": [{"id": big}]}, name="ids"),
            binding(lambda: {"id": 2**60}, name="pow"),
            binding(lambda: {"id": str(big), "f": 1.0e16}, name="as_text"),
        ]
    )
    # integers a JavaScript number holds (and prints back) exactly pass, however large
    res = sb.run(
        "const e = await tools.edge(); [e.max, e.neg, e.e20 === 1e20, e.two53 === 2 ** 53]"
    )
    assert res.value == [2**53 - 1, -(2**53 - 1), True, True]
    res = sb.run("await tools.ids()")
    assert res.error is not None and res.error.kind == "binding_failed"
    assert f"$.rows[0].id is {big}, which a JavaScript number cannot hold exactly" in (
        res.error.message
    )
    assert f"it would become {2**53}" in res.error.message
    assert "return it as a string" in res.error.message
    # 2**60 is a double, but JavaScript reads and prints it as 1152921504606847000
    res = sb.run("await tools.pow()")
    assert res.error is not None and "it would become 1152921504606847000" in res.error.message
    assert sb.run("await tools.as_text()").value == {"id": str(big), "f": 1.0e16}


def test_deep_results_cross_and_deeper_ones_fail_cleanly() -> None:
    deep: list[Any] = []
    for _ in range(3000):
        deep = [deep]
    sb = Sandbox(bindings=[binding(lambda: deep, name="deep")])
    assert sb.run("const v = await tools.deep(); 'ok'").value == "ok"
    deeper: list[Any] = []
    for _ in range(20_000):
        deeper = [deeper]
    sb = Sandbox(bindings=[binding(lambda: deeper, name="deep")])
    res = sb.run("await tools.deep()")
    assert res.error is not None and res.error.kind == "binding_failed"
    assert "nested more than 10000 levels deep" in res.error.message
