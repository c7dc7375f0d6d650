"""describe_tools(): the TypeScript declaration a model reads."""

from __future__ import annotations

import dataclasses
import enum
import logging
import typing
from typing import Literal

import pytest
import typing_extensions
from pydantic import BaseModel, Field

from clambot_tools import Policy, Sandbox, binding


class Point(BaseModel):
    x: float = Field(description="east-west")
    y: float


class Hit(BaseModel):
    id: int
    kind: Literal["a", "b"]


def search(query: str, limit: int = 10, near: Point | None = None) -> list[Hit]:
    """Search the catalogue."""
    return []


def test_declaration_has_types_docs_and_optional_fields() -> None:
    text = Sandbox(bindings=[search]).describe_tools()
    assert "declare const tools: {" in text
    assert "/** Search the catalogue. */" in text
    assert "search(args: {" in text
    assert "query: string;" in text
    assert "limit?: number; // default: 10" in text
    assert "near?: {" in text  # $ref resolved
    assert "x: number; // east-west" in text
    assert 'Promise<{ id: number; kind: "a" | "b" }[]>' in text  # from the annotation
    assert text.rstrip().endswith("};")


def test_odd_names_are_quoted() -> None:
    @binding(name="delete-all", description="Delete everything")
    def delete_all() -> None: ...

    @binding(name="class")
    def reserved(tags: dict[str, list[int]]) -> int:
        return 0

    text = Sandbox(bindings=[delete_all, reserved]).describe_tools()
    assert '"delete-all"(): Promise<null>;' in text
    assert '"class"(args: { tags: Record<string, number[]> }): Promise<number>;' in text


def test_declaration_is_what_a_script_can_call() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    sb = Sandbox(bindings=[add])
    assert "add(args: { a: number; b: number }): Promise<number>;" in sb.describe_tools()
    assert sb.run("await tools.add({a: 2, b: 40})").value == 42


# -- only what the policy lets a script call


def _lookup(order_id: str) -> int:
    """Look up an order."""
    return 1


def _fetch(url: str) -> str:
    """Fetch a page."""
    return ""


def _refund(order_id: str) -> bool:
    """Refund an order."""
    return True


def _admin(command: str) -> str:
    """Run an admin command."""
    return ""


LOOKUP = binding(_lookup, name="lookup")
FETCH = binding(_fetch, name="fetch", effects=("network",))
REFUND = binding(_refund, name="refund", effects=("write",))
ADMIN = binding(_admin, name="admin")


def test_declaration_leaves_out_what_the_policy_refuses() -> None:
    policy = Policy(allow=["lookup", "fetch", "refund"], deny_effects=["network"])
    text = Sandbox(bindings=[LOOKUP, FETCH, REFUND, ADMIN], policy=policy).describe_tools()
    assert "lookup(" in text
    assert "admin" not in text  # not in the allow-list
    assert "fetch" not in text  # its effect is denied
    # a write with no approver is refused: still listed, marked so the model knows
    assert "/** Refund an order. (always refused: it needs approval and no approver is set) */" in (
        text
    )


def test_declaration_marks_calls_that_ask_a_human() -> None:
    policy = Policy(approve=lambda request: True)
    text = Sandbox(bindings=[LOOKUP, REFUND], policy=policy).describe_tools()
    assert "/** Refund an order. (needs approval) */" in text
    assert "/** Look up an order. */" in text
    auto = Sandbox(bindings=[REFUND], policy=Policy(auto_approve=("write",))).describe_tools()
    assert "/** Refund an order. */" in auto


# -- each type once, stable names and order


class Ticket(typing.TypedDict):
    id: str
    title: str
    priority: Literal["low", "normal", "high"]
    status: Literal["open", "closed"]
    assignee: str | None


def get_ticket(ticket_id: str) -> Ticket:
    """Get one ticket."""
    raise NotImplementedError


def list_tickets(
    priority: Literal["low", "normal", "high"] | None = None,
    status: Literal["open", "closed"] | None = None,
) -> list[Ticket]:
    """List tickets."""
    raise NotImplementedError


def assign_ticket(ticket_id: str, assignee: str) -> Ticket:
    """Assign a ticket."""
    raise NotImplementedError


def test_repeated_shapes_and_enums_are_declared_once() -> None:
    text = Sandbox(bindings=[get_ticket, list_tickets, assign_ticket]).describe_tools()
    assert text.count("interface Ticket {") == 1
    assert text.count('"low" | "normal" | "high"') == 1
    assert text.count('"open" | "closed"') == 1
    assert 'type Priority = "low" | "normal" | "high";' in text
    assert "get_ticket(args: { ticket_id: string }): Promise<Ticket>;" in text
    assert "list_tickets(args?: { priority?: Priority; status?: Status }): Promise<Ticket[]>;" in (
        text
    )
    # named in order of first appearance, the same text every time
    assert text.index("interface Ticket") < text.index("type Priority") < text.index("type Status")
    again = Sandbox(bindings=[get_ticket, list_tickets, assign_ticket]).describe_tools()
    assert again == text


def test_no_doc_comment_repeats_the_type_and_docs_are_one_line() -> None:
    def find(
        query: str,
        city: str | None = None,
        limit: int = 20,
        tag: str = Field(default="", description="tag"),
    ) -> int:
        """Find places.

        Searches every place we know,
        by name and city.
        """
        return 0

    text = Sandbox(bindings=[binding(find)]).describe_tools()
    assert "default: null" not in text
    assert "city?: string;" in text  # optional: no `| null` beside `?`
    assert "// tag" not in text  # a description that only repeats the name
    assert "/** Find places. Searches every place we know, by name and city. */" in text
    for line in text.splitlines():
        assert not line.strip().startswith("*"), line  # no multi-line doc comments


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(typing_extensions.TypedDict):
    sku: str
    qty: int


@dataclasses.dataclass
class Parcel:
    weight_kg: float
    color: Color
    lines: list[Line]


class Quote(BaseModel):
    price_eur: float = Field(description="with VAT")
    parcel: Parcel


class Sizes(typing.NamedTuple):
    width: int
    height: int


def test_result_types_from_what_users_write() -> None:
    def ticket() -> Ticket: ...  # typing.TypedDict: pydantic refuses it before 3.12
    def parcel() -> Parcel: ...
    def quote() -> Quote: ...
    def sizes() -> Sizes: ...
    def maybe() -> Line | None: ...

    text = Sandbox(bindings=[ticket, parcel, quote, sizes, maybe]).describe_tools()
    assert "ticket(): Promise<{" in text and "assignee: string | null;" in text
    assert "parcel(): Promise<Parcel>;" in text  # Parcel is also inside Quote
    # Color appears once (inside Parcel, itself declared once): it stays inline
    assert 'interface Parcel { weight_kg: number; color: "red" | "blue"; lines: Line[] }' in text
    assert "interface Line { sku: string; qty: number }" in text
    assert "price_eur: number; // with VAT" in text
    assert "sizes(): Promise<[number, number]>;" in text
    assert "maybe(): Promise<Line | null>;" in text
    assert "unknown" not in text


@dataclasses.dataclass
class Folder:
    name: str
    children: list[Folder]


def test_recursive_types_are_named() -> None:
    def tree() -> Folder: ...

    text = Sandbox(bindings=[tree]).describe_tools()
    assert "interface Folder {" in text and "children: Folder[]" in text
    assert "tree(): Promise<Folder>;" in text


def test_unknown_results_say_inspect_first_and_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def mystery_tool_a(x: int):  # type: ignore[no-untyped-def]
        return {"x": x}

    def mystery_tool_b(x: int) -> dict:  # type: ignore[type-arg]
        return {"x": x}

    with caplog.at_level(logging.WARNING, logger="clambot_tools"):
        sb = Sandbox(bindings=[mystery_tool_a, mystery_tool_b])
        text = sb.describe_tools()
        assert sb.describe_tools() == text
    assert "mystery_tool_a(args: { x: number }): Promise<unknown>;" in text
    assert "mystery_tool_b(args: { x: number }): Promise<unknown>;" in text
    assert "is not declared: look at one (return it) before relying on its fields" in text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("tools.mystery_tool_a" in w for w in warnings) == 1
    assert sum("tools.mystery_tool_b" in w for w in warnings) == 1
    assert Sandbox(bindings=[search]).describe_tools().count("not declared") == 0


def test_result_schema_beats_the_annotation() -> None:
    @binding(result_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    def count() -> dict:  # type: ignore[type-arg]
        return {"n": 1}

    assert "count(): Promise<{ n?: number }>;" in Sandbox(bindings=[count]).describe_tools()


def test_the_readme_declaration_example_is_what_describe_tools_prints() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What the model reads: `describe_tools()`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    expected = re.search(r"```ts\n(.*?)```", section, re.S)
    assert code is not None and expected is not None
    *body, last = code.group(1).strip().splitlines()
    scope = {"binding": binding, "Sandbox": Sandbox, "Policy": Policy}
    scope["ask_a_human"] = lambda request: True
    source = "\n".join([*body, f"printed = {last}"])
    exec(compile(source, "README.md", "exec", dont_inherit=True), scope)
    assert scope["printed"] == expected.group(1).strip()
