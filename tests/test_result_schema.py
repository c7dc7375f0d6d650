"""A binding's result schema, read from its return annotation: every form users write.

What the declaration tells the model about a tool's result comes from here, so each
kind of annotation keeps its schema (the table below), and one that says nothing usable
gives no schema rather than a wrong one.
"""

import collections.abc
import dataclasses
import datetime
import enum
import typing
from typing import Annotated, Any, Generic, Literal, NamedTuple, TypeVar

import pytest
import typing_extensions

from clambot_tools import binding

T = TypeVar("T")


class Size(enum.Enum):
    S = "s"
    L = "l"


class Point(NamedTuple):
    x: int
    y: float


class Row(typing_extensions.TypedDict):
    id: str
    note: typing_extensions.NotRequired[str]


@dataclasses.dataclass
class Box(Generic[T]):
    item: T
    label: str


BOX = {"type": "object", "properties": {"item": {}, "label": {"type": "string"}}}
BOX["required"] = ["item", "label"]


def result_schema_of(annotation: object) -> dict[str, Any] | None:
    def tool() -> None: ...

    tool.__annotations__ = {"return": annotation}
    return binding(tool).result_schema


NULL = {"type": "null"}
INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (None, NULL),
        (type(None), NULL),
        (int, INT),
        (bool, {"type": "boolean"}),
        (float, NUM),
        (str, STR),
        (datetime.date, STR),
        (bytes, STR),
        (Annotated[int, "why"], INT),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (int | None, {"anyOf": [INT, NULL]}),
        (typing.Union[int, str], {"anyOf": [INT, STR]}),  # noqa: UP007 - the old spelling
        (tuple[int, ...], {"type": "array", "items": INT}),
        (tuple, {"type": "array"}),
        (
            tuple[int, str],
            {"type": "array", "prefixItems": [INT, STR], "minItems": 2, "maxItems": 2},
        ),
        (list[float], {"type": "array", "items": NUM}),
        (list[Any], {"type": "array", "items": {}}),
        (collections.abc.Sequence[str], {"type": "array", "items": STR}),
        (set[int], {"type": "array", "items": INT}),
        (list, {"type": "array"}),
        (dict, {"type": "object"}),
        (dict[str, int], {"type": "object", "additionalProperties": INT}),
        (collections.abc.Mapping[str, Any], {"type": "object", "additionalProperties": {}}),
        (Point, {"type": "array", "prefixItems": [INT, NUM]}),
        (Box[int], {"$ref": "#/$defs/Box", "$defs": {"Box": BOX}}),  # a generic class: bare
        (collections.OrderedDict[str, int], None),  # a class that is not data
    ],
)
def test_each_annotation_form_gives_its_json_schema(annotation: object, schema: object) -> None:
    assert result_schema_of(annotation) == schema


@pytest.mark.parametrize(
    "annotation",
    [Any, object, T, "NotDefinedAnywhere", typing.ForwardRef("Nope"), type("Opaque", (), {})],
)
def test_annotations_that_say_nothing_give_no_schema(annotation: object) -> None:
    assert result_schema_of(annotation) is None


def test_classes_become_named_definitions() -> None:
    assert result_schema_of(Size) == {
        "$ref": "#/$defs/Size",
        "$defs": {"Size": {"enum": ["s", "l"]}},
    }
    assert result_schema_of(list[Row]) == {
        "type": "array",
        "items": {"$ref": "#/$defs/Row"},
        "$defs": {
            "Row": {
                "type": "object",
                "properties": {"id": STR, "note": STR},
                "required": ["id"],
            }
        },
    }


def test_nesting_past_the_cap_says_nothing_rather_than_recursing() -> None:
    deep: object = int
    for _ in range(60):
        deep = list[deep]  # type: ignore[valid-type]
    schema = result_schema_of(deep)
    assert schema is not None
    depth = 0
    node: dict[str, Any] = schema
    while node.get("items"):
        node, depth = node["items"], depth + 1
    # cut at the cap: below it the items are unknown ({}), not a wrong type
    assert node == {"type": "array", "items": {}} and depth < 60
