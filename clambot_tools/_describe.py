"""The model's view of the API: a TypeScript-style declaration of `tools`.

Built from each binding's argument and result schemas and its description, so an agent
framework can put it in a tool description and a model calls bindings right the first
time. What it promises a reader (a model):

- Only what the script can call: bindings the policy refuses outright (not in
  ``allow``, or with a denied effect) are left out; bindings that ask a human first,
  or that are refused because nobody is there to ask, say so.
- Each type once: an object shape or an enum that appears more than once (across
  tools, arguments and results) becomes one named ``interface``/``type``, named after
  its class or ``$defs`` entry (else after the field or tool it came from), in order of
  first appearance, so the text is the same from run to run.
- Short (it is read on every turn; bench/tokens.py counts it): one-line doc comments
  (``/** ... */`` for tools, a trailing ``// ...`` for fields), no comment that repeats
  the type or the name (a ``null`` default beside ``?:``), optional arguments without
  ``| null``, objects on one line when they fit.
- Honest results: from the binding's ``result_schema``, else its return annotation
  (TypedDicts, dataclasses, pydantic models... see ``_annotations``), else a shape
  observed from real results (``ResultShapes``), else ``unknown``, which the header
  tells the model to inspect before use (and one warning per tool is logged).

Above a size budget the declaration shrinks to names and one-line summaries; scripts
then read the rest with ``tools.$describe`` / ``tools.$search`` (see ``_discovery``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._annotations import result_schema, return_annotation
from ._bindings import Binding
from ._jsonschema import resolve_ref

if TYPE_CHECKING:
    from ._policy import Policy
    from ._shapes import ResultShapes

logger = logging.getLogger("clambot_tools")

_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_RESERVED = frozenset(
    "break case catch class const continue debugger default delete do else enum export "
    "extends false finally for function if import in instanceof new null return super "
    "switch this throw true try typeof var void while with yield let static await".split()
)
#: names a declared type must not take (TypeScript's and the declaration's own)
_TAKEN = frozenset(
    "Array Boolean Date Error Function JSON Map Math Number Object Promise Record RegExp "
    "Set String Symbol Tool unknown never object string number boolean null".split()
)
#: longest doc comment in the declaration a prompt carries (``$describe`` shows all)
SUMMARY_CHARS = 240
FIELD_DOC_CHARS = 160
_INLINE_CHARS = 100
FIELD_DOCS = "trailing"

HEADER = "/** Tools this script can call. Every call is async: `await tools.name({...})`. */"
_UNKNOWN_NOTE = (
    "/** A result typed `unknown` is not declared: look at one (return it) before "
    "relying on its fields. */"
)
_COMPACT_HEADER = (
    "/** Tools this script can call; types not shown: read them with "
    '`await tools.$describe("name")`, find tools with `await tools.$search("words")`. */'
)
_COMPACT_TYPES = (
    "type Tool = (args?: object) => Promise<unknown>;\n"
    "type Lookup = (query: string | string[]) => Promise<string>;"
)
_ASKS = "needs approval"
_REFUSED = "always refused: it needs approval and no approver is set"


def _key(name: str) -> str:
    """A property name as TypeScript accepts it: bare when it can be, else quoted."""
    return name if _IDENT.match(name) and name not in _RESERVED else json.dumps(name)


def one_line(text: str, limit: int | None) -> str:
    """`text` as one line (whitespace collapsed, ``*/`` escaped), cut at `limit`."""
    flat = " ".join(text.split()).replace("*/", "*\\/")
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


def _camel(name: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", name)
    out = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return out if out and not out[0].isdigit() else f"T{out}"


# ---------------------------------------------------------------- the type tree
#
# Schemas are read into hashable tuples, so equal shapes compare equal wherever they
# come from:
#   ("p", "string")                          a primitive (or "unknown")
#   ("lit", ('"a"', '"b"'))                  literal values (enum / const), as JSON
#   ("arr", T) / ("tup", (T, ...)) / ("rec", T)
#   ("or", (T, ...))
#   ("obj", ((name, T, optional, doc), ...), extra T | None)
#   ("ref", key)                             a recursive reference to a $defs entry

Node = tuple[Any, ...]
UNKNOWN: Node = ("p", "unknown")


class _Reader:
    """Reads the JSON Schemas of one binding into the type tree."""

    def __init__(self, book: _Book, root: dict[str, Any], scope: str, *, result: bool) -> None:
        self.book = book
        self.root = root
        self.scope = scope
        self.result = result
        self.active: set[str] = set()
        self.memo: dict[str, Node] = {}

    def resolve(self, ref: str) -> Any:
        return resolve_ref(self.root, ref)

    def read(self, schema: Any, hint: str, depth: int = 0) -> Node:
        if not isinstance(schema, dict) or not schema or depth > 40:
            return UNKNOWN
        if "$ref" in schema:
            ref = str(schema["$ref"])
            key = f"{self.scope}\0{ref}"
            if key in self.active:
                self.book.recursive.add(key)
                return ("ref", key)
            if key in self.memo:
                return self.memo[key]
            target = self.resolve(ref)
            if not isinstance(target, dict):
                return UNKNOWN
            name = ref.rsplit("/", 1)[-1]
            self.active.add(key)
            try:
                node = self.read(target, name, depth + 1)
            finally:
                self.active.discard(key)
            self.memo[key] = node
            self.book.hint(node, name, strong=True)
            if key in self.book.recursive:
                self.book.named_refs[key] = node
            return node
        node = self.read_plain(schema, hint, depth)
        self.book.hint(node, hint)
        return node

    def read_plain(self, schema: dict[str, Any], hint: str, depth: int) -> Node:
        if "const" in schema:
            return ("lit", (json.dumps(schema["const"], ensure_ascii=False),))
        if isinstance(schema.get("enum"), list):
            values = tuple(dict.fromkeys(json.dumps(v, ensure_ascii=False) for v in schema["enum"]))
            return ("lit", values) if values else ("p", "never")
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                return _union(self.read(s, hint, depth + 1) for s in schema[key])
        subs = schema.get("allOf")
        if isinstance(subs, list) and subs:
            if len(subs) == 1:
                return self.read(subs[0], hint, depth + 1)
            return _union([self.read(subs[0], hint, depth + 1)])
        t = schema.get("type")
        if isinstance(t, list):
            return _union(self.read({**schema, "type": x}, hint, depth + 1) for x in t)
        if t == "string":
            return ("p", "string")
        if t in ("integer", "number"):
            return ("p", "number")
        if t == "boolean":
            return ("p", "boolean")
        if t == "null":
            return ("p", "null")
        if t == "array":
            if isinstance(schema.get("prefixItems"), list):
                return ("tup", tuple(self.read(s, hint, depth + 1) for s in schema["prefixItems"]))
            return ("arr", self.read(schema.get("items", {}), _singular(hint), depth + 1))
        if t == "object" or "properties" in schema:
            return self.read_object(schema, hint, depth)
        return UNKNOWN

    def read_object(self, schema: dict[str, Any], hint: str, depth: int) -> Node:
        props = schema.get("properties")
        extra_schema = schema.get("additionalProperties")
        extra = self.read(extra_schema, hint, depth + 1) if isinstance(extra_schema, dict) else None
        if not isinstance(props, dict) or (not props and extra_schema is not False):
            return ("rec", extra if extra is not None else UNKNOWN)
        required = set(schema.get("required") or ())
        fields = []
        for name, sub in props.items():
            parent = hint.split("\0")[0]
            t = self.read(sub, f"{_camel(name)}\0{parent}{_camel(name)}", depth + 1)
            optional = name not in required
            doc = ""
            if isinstance(sub, dict):
                doc = _field_doc(name, sub, result=self.result)
                if optional and sub.get("default", 0) is None:
                    t = _without_null(t)  # `x?: T`: leaving it out is the way to say null
            fields.append((str(name), t, optional, doc))
        return ("obj", tuple(fields), extra)


def _singular(hint: str) -> str:
    if "\0" in hint:
        return "\0".join(_singular(h) for h in hint.split("\0"))
    if hint.endswith("ies") and len(hint) > 4:
        return hint[:-3] + "y"
    if hint.endswith("s") and not hint.endswith("ss") and len(hint) > 3:
        return hint[:-1]
    return hint


def _field_doc(name: str, sub: dict[str, Any], *, result: bool) -> str:
    desc = sub.get("description")
    desc = desc.strip() if isinstance(desc, str) else ""
    if re.sub(r"[\W_]+", "", desc.lower()) == re.sub(r"[\W_]+", "", name.lower()):
        desc = ""  # the description only repeats the name
    if not result and "default" in sub and sub["default"] is not None:
        value = sub["default"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # as JavaScript writes it: 0, not 0.0
        default = json.dumps(value, ensure_ascii=False)
        if len(default) <= 40:
            desc = f"{desc} (default: {default})" if desc else f"default: {default}"
    return desc


def _union(parts: Iterable[Node]) -> Node:
    out: list[Node] = []
    for p in parts:
        for q in p[1] if p[0] == "or" else (p,):
            if q not in out:
                out.append(q)
    if UNKNOWN in out:
        return UNKNOWN
    if len(out) == 1:
        return out[0]
    return ("or", tuple(out)) if out else UNKNOWN


def _without_null(t: Node) -> Node:
    if t[0] == "or":
        rest = [p for p in t[1] if p != ("p", "null")]
        return _union(rest) if rest else t
    return t


def _is_loose(t: Node) -> bool:
    """A result type that says nothing a script can rely on."""
    return t == UNKNOWN or t == ("rec", UNKNOWN) or t == ("arr", UNKNOWN)


# ---------------------------------------------------------------- naming shared types


class _Book:
    """The names of the declaration's shared types: hints, recursion, the chosen names."""

    def __init__(self) -> None:
        self.hints: dict[Node, tuple[str, bool]] = {}
        self.recursive: set[str] = set()
        self.named_refs: dict[str, Node] = {}
        self.names: dict[Node, str] = {}

    def hint(self, node: Node, name: str, *, strong: bool = False) -> None:
        if node[0] not in ("obj", "lit"):
            return
        old = self.hints.get(node)
        if old is None or (strong and not old[1]):
            self.hints[node] = (name, strong)

    def choose(self, roots: Sequence[Node], keep_inline: set[Node]) -> list[Node]:
        """Name the shapes that would otherwise be written more than once (and the
        recursive ones), except those in `keep_inline` (a tool's arguments read best
        at the tool); return them in order of first appearance."""
        order: list[Node] = []
        counts: dict[Node, int] = {}
        _walk_all(roots, counts, order, set())
        forced = {n for n in self.named_refs.values() if n[0] == "obj"}
        candidates = [
            n
            for n in order
            if n in forced or (counts[n] > 1 and _worth_naming(n) and n not in keep_inline)
        ]
        # bigger shapes first: naming a parent may make its children appear once
        candidates.sort(key=lambda n: -len(repr(n)))
        chosen: set[Node] = set()
        for n in candidates:
            if n in forced:
                chosen.add(n)
                continue
            c: dict[Node, int] = {}
            _walk_all(roots, c, [], chosen)
            if c.get(n, 0) > 1:
                chosen.add(n)
        used = set(_TAKEN)
        result = [n for n in order if n in chosen]
        for n in result:
            options = [_camel(h) for h in self.hints.get(n, ("Shape", False))[0].split("\0")]
            name = next((o for o in options if o not in used), options[0])
            base, i = options[0], 2
            while name in used:
                name, i = f"{base}{i}", i + 1
            used.add(name)
            self.names[n] = name
        return result


def _worth_naming(n: Node) -> bool:
    if n[0] == "obj":
        return len(n[1]) >= 2 or n[2] is not None
    return n[0] == "lit" and len(n[1]) >= 2


def _children(n: Node) -> Iterable[Node]:
    kind = n[0]
    if kind in ("arr", "rec"):
        yield n[1]
    elif kind in ("tup", "or"):
        yield from n[1]
    elif kind == "obj":
        for f in n[1]:
            yield f[1]
        if n[2] is not None:
            yield n[2]


def _walk_all(
    roots: Sequence[Node], counts: dict[Node, int], order: list[Node], once: set[Node]
) -> None:
    """Count each obj/lit node's occurrences; nodes in `once` are entered only once."""
    entered: set[Node] = set()
    stack = list(reversed(roots))
    while stack:
        n = stack.pop()
        if n[0] in ("obj", "lit"):
            if n not in counts:
                order.append(n)
            counts[n] = counts.get(n, 0) + 1
            if n in once:
                if n in entered:
                    continue
                entered.add(n)
        stack.extend(reversed(list(_children(n))))


# ---------------------------------------------------------------- writing


class _Writer:
    def __init__(self, book: _Book, *, field_doc_chars: int | None) -> None:
        self.book = book
        self.field_doc_chars = field_doc_chars

    def type_of(self, n: Node, indent: str, *, top: bool = False) -> str:
        name = self.book.names.get(n)
        if name is not None and not top:
            return name
        kind = n[0]
        if kind == "p":
            return str(n[1])
        if kind == "lit":
            return " | ".join(n[1])
        if kind == "ref":
            target = self.book.named_refs.get(n[1])
            return self.book.names.get(target, "unknown") if target is not None else "unknown"
        if kind == "arr":
            item = self.type_of(n[1], indent)
            return f"({item})[]" if _needs_parens(n[1], item) else f"{item}[]"
        if kind == "tup":
            return "[" + ", ".join(self.type_of(x, indent) for x in n[1]) + "]"
        if kind == "rec":
            return f"Record<string, {self.type_of(n[1], indent)}>"
        if kind == "or":
            return " | ".join(self.type_of(x, indent) for x in n[1])
        if kind == "obj":
            return self.object_of(n, indent)
        return "unknown"

    def object_of(self, n: Node, indent: str) -> str:
        fields, extra = n[1], n[2]
        docs = [one_line(f[3], self.field_doc_chars) for f in fields]
        if not any(docs):
            parts = [
                f"{_key(f[0])}{'?' if f[2] else ''}: {self.type_of(f[1], indent)}" for f in fields
            ]
            if extra is not None:
                parts.append(f"[key: string]: {self.type_of(extra, indent)}")
            flat = "{ " + "; ".join(parts) + " }"
            if len(flat) <= _INLINE_CHARS and "\n" not in flat:
                return flat
        inner = indent + "  "
        lines = ["{"]
        for f, doc in zip(fields, docs, strict=True):
            line = f"{inner}{_key(f[0])}{'?' if f[2] else ''}: {self.type_of(f[1], inner)};"
            if doc and FIELD_DOCS == "jsdoc":
                lines.append(f"{inner}/** {doc} */")
            elif doc and "\n" in line:  # a comment after a nested object would be lost
                lines.append(f"{inner}// {doc}")
            elif doc:
                line += f" // {doc}"
            lines.append(line)
        lines.append(f"{indent}}}")
        return "\n".join(lines)

    def declaration_of(self, n: Node) -> str:
        name = self.book.names[n]
        if n[0] == "lit":
            return f"type {name} = {self.type_of(n, '', top=True)};"
        return f"interface {name} {self.type_of(n, '', top=True)}"


def _needs_parens(n: Node, text: str) -> bool:
    return n[0] == "or" or (n[0] == "lit" and len(n[1]) > 1) or text.startswith("(")


# ---------------------------------------------------------------- bindings


@dataclass
class _Entry:
    binding: Binding
    mark: str  # "" / _ASKS / _REFUSED
    args: Node
    result: Node
    observed: bool


def visible(bindings: Sequence[Binding], policy: Policy | None) -> list[tuple[Binding, str]]:
    """The bindings a script may call under `policy`, each with its approval mark."""
    out = []
    for b in bindings:
        if policy is None:
            out.append((b, ""))
            continue
        if policy.allow is not None and b.name not in policy.allow:
            continue
        if any(e in policy.deny_effects for e in b.effects):
            continue
        asking = [
            e for e in b.effects if e in policy.approve_effects and e not in policy.auto_approve
        ]
        mark = "" if not asking else (_ASKS if policy.approve is not None else _REFUSED)
        out.append((b, mark))
    return out


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_unknown(name: str) -> None:
    with _warned_lock:
        if name in _warned or len(_warned) > 4096:
            return
        _warned.add(name)
    logger.warning(
        "tools.%s: its result type is unknown (no result_schema and no usable return "
        "annotation); the declaration tells the model to inspect a result first. "
        "Annotate the return type (a TypedDict, dataclass or pydantic model) or pass "
        "result_schema= to binding().",
        name,
    )


def _declared_result(b: Binding) -> dict[str, Any] | None:
    if b.result_schema is not None:
        return b.result_schema
    ann = return_annotation(b.func)
    if ann is None:
        return {"type": "null"}
    return result_schema(ann)


def _entries(
    bindings: Sequence[Binding], policy: Policy | None, shapes: ResultShapes | None, book: _Book
) -> list[_Entry]:
    entries = []
    for i, (b, mark) in enumerate(visible(bindings, policy)):
        scope = f"{i}:{b.name}"
        schema = b.arguments_schema()
        args = _Reader(book, schema, scope + ":args", result=False).read(
            schema, _camel(b.name) + "Args"
        )
        if args[0] != "obj" and args != ("rec", UNKNOWN):
            args = ("rec", UNKNOWN) if args[0] == "rec" else args
        declared = _declared_result(b)
        result, observed = UNKNOWN, False
        if declared is not None:
            result = _Reader(book, declared, scope + ":result", result=True).read(
                declared, _camel(b.name) + "Result"
            )
        if _is_loose(result) and shapes is not None:
            seen = shapes.schema(b.name)
            if seen is not None:
                result = _Reader(book, seen, scope + ":seen", result=True).read(
                    seen, _camel(b.name) + "Result"
                )
                observed = not _is_loose(result)
        if _is_loose(result):
            result = UNKNOWN
            _warn_unknown(b.name)
        entries.append(_Entry(b, mark, args, result, observed))
    return entries


def _tool_doc(e: _Entry, limit: int | None) -> str:
    doc = one_line(e.binding.description, limit)
    notes = [
        m for m in (e.mark, "result shape observed from earlier calls" if e.observed else "") if m
    ]
    if notes:
        doc = f"{doc} ({'; '.join(notes)})" if doc else "; ".join(notes).capitalize()
    return doc


def _write(entries: list[_Entry], book: _Book, *, full: bool, header: bool) -> str:
    roots: list[Node] = []
    for e in entries:
        roots += [e.args, e.result]
    shared = book.choose(roots, {e.args for e in entries})
    w = _Writer(book, field_doc_chars=None if full else FIELD_DOC_CHARS)
    lines = [HEADER] if header else []
    if any(e.result == UNKNOWN for e in entries):
        lines.append(_UNKNOWN_NOTE)
    lines += [w.declaration_of(n) for n in shared]
    lines.append("declare const tools: {")
    for e in entries:
        doc = _tool_doc(e, None if full else SUMMARY_CHARS)
        if doc:
            lines.append(f"  /** {doc} */")
        args = e.args
        if args == ("rec", UNKNOWN) or (args[0] == "obj" and not args[1] and args[2] is None):
            params = "args?: Record<string, unknown>" if args[0] == "rec" else ""
        else:
            optional = "?" if args[0] == "obj" and all(f[2] for f in args[1]) else ""
            params = f"args{optional}: {w.type_of(args, '  ')}"
        lines.append(f"  {_key(e.binding.name)}({params}): Promise<{w.type_of(e.result, '  ')}>;")
    lines.append("};")
    return "\n".join(lines)


def describe(
    bindings: Sequence[Binding],
    policy: Policy | None = None,
    *,
    shapes: ResultShapes | None = None,
    max_chars: int | None = None,
    full: bool = False,
    header: bool = True,
) -> str:
    """The TypeScript declaration of `tools` for the bindings `policy` lets a script
    call (see the module doc). Longer than `max_chars`, it lists names and one-line
    summaries only (then names only, then just how to look tools up), and says how to
    read the rest with ``tools.$describe``/``tools.$search``. `full` keeps doc comments
    whole; `header` False leaves out the opening comment. Never raises for any schema."""
    book = _Book()
    entries = _entries(bindings, policy, shapes, book)
    text = _write(entries, book, full=full, header=header)
    if max_chars is None or len(text) <= max_chars:
        return text
    return _compact(entries, max_chars)


def _summary(e: _Entry, limit: int) -> str:
    text = one_line(e.binding.description, None)
    m = re.search(r"(?<=[.!?])\s", text)
    if m is not None:
        text = text[: m.start()]
    text = one_line(text, limit)
    if e.mark:
        text = f"{text} ({'needs approval' if e.mark == _ASKS else 'always refused'})"
    return text.strip()


def _compact(entries: list[_Entry], max_chars: int) -> str:
    """The declaration in `max_chars`: names and summaries, else names, else a count."""
    tail = ["  $describe: Lookup;", "  $search: Lookup;", "};", _COMPACT_TYPES]
    for limit in (100, 40):
        body = []
        for e in entries:
            summary = _summary(e, limit)
            body.append(f"  {_key(e.binding.name)}: Tool;" + (f" // {summary}" if summary else ""))
        text = "\n".join([_COMPACT_HEADER, "declare const tools: {", *body, *tail])
        if len(text) <= max_chars:
            return text
    names = "; ".join(f"{_key(e.binding.name)}: Tool" for e in entries)
    text = "\n".join(
        [
            _COMPACT_HEADER,
            f"declare const tools: {{ {names}; $describe: Lookup; $search: Lookup }};",
            _COMPACT_TYPES,
        ]
    )
    if len(text) <= max_chars:
        return text
    return "\n".join(
        [
            _COMPACT_HEADER,
            f"declare const tools: Record<string, Tool> & {{ $describe: Lookup; $search: Lookup }};"
            f" // {len(entries)} tools",
            _COMPACT_TYPES,
        ]
    )
