"""describe_tools(): the TypeScript declaration a model reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from clambot_tools import Sandbox, binding


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
    assert "limit?: number;" in text and "(default: 10)" in text
    assert "near?: {" in text and "} | null;" in text  # $ref resolved, nullable kept
    assert "/** east-west */" in text
    assert 'kind: "a" | "b";' in text  # return type from the annotation
    assert text.rstrip().endswith("};")


def test_odd_names_are_quoted_and_effects_shown() -> None:
    @binding(name="delete-all", effects=("write",), description="Delete everything")
    def delete_all() -> None: ...

    @binding(name="class")
    def reserved(tags: dict[str, list[int]]) -> int:
        return 0

    text = Sandbox(bindings=[delete_all, reserved]).describe_tools()
    assert '"delete-all"(args?: {}): Promise<null>;' in text
    assert "(effects: write)" in text
    assert '"class"(args: {' in text
    assert "tags: Record<string, number[]>;" in text


def test_declaration_is_what_a_script_can_call() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    sb = Sandbox(bindings=[add])
    assert "add(args: {" in sb.describe_tools()
    assert sb.run("await tools.add({a: 2, b: 40})").value == 42
