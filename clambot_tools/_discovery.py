"""``tools.$describe`` and ``tools.$search``: a script reads the tools it has.

Every Sandbox adds these two built-ins to ``tools`` (unless a granted binding already
has the name). They let a prompt carry only names and summaries of a large tool set
(see ``describe``'s `max_chars`) while a script still gets the exact TypeScript of
what it is about to call:

    await tools.$describe("get_order")             // or ["get_order", "refund"]
    await tools.$search("refund order")            // the best matches, declared

Both return a string and only ever show tools the policy lets the script call. They
reach nothing outside the sandbox, so the policy never refuses them and they do not
count against ``max_calls``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._abi import Resolve
from ._wording import call_text, tool_ref

if TYPE_CHECKING:
    from ._bindings import Binding
    from ._policy import Policy
    from ._shapes import ResultShapes

DESCRIBE, SEARCH = "$describe", "$search"
#: a declaration longer than this (characters) is shown compactly by default
DEFAULT_MAX_CHARS = 8000
#: tools one $search answers with
SEARCH_LIMIT = 8
_WORD = re.compile(r"[0-9a-z]+")


class Discovery:
    """The built-in ``$describe``/``$search`` of one Sandbox.

    Args:
        bindings: the Sandbox's bindings (the built-ins come after them in ``tools``).
        policy: what the script may call (only that is ever shown).
        shapes: result shapes learned so far, if the Sandbox learns them.
    """

    def __init__(
        self, bindings: Sequence[Binding], policy: Policy, shapes: ResultShapes | None
    ) -> None:
        self.bindings = bindings
        self.policy = policy
        self.shapes = shapes
        taken = {b.name for b in bindings}
        self.names = tuple(n for n in (DESCRIBE, SEARCH) if n not in taken)

    @property
    def names_block(self) -> bytes:
        """The built-ins' names as the guest's name block continues (NUL-terminated)."""
        return b"".join(n.encode() + b"\0" for n in self.names)

    def answer(self, index: int, data: bytes) -> tuple[Resolve, bytes]:
        """The guest's answer to a call of built-in number `index` with JSON arguments
        `data`: the JSON result, or a TypeError naming the mistake. Never raises."""
        name = self.names[index] if 0 <= index < len(self.names) else f"#{index}"
        try:
            query = _query(json.loads(data)) if 0 <= index < len(self.names) else None
        except (ValueError, RecursionError):
            query = None
        if query is not None and name == DESCRIBE and len(query) > MAX_QUERY_ITEMS:
            return _mistake(name, data, f"{tool_ref(name)} takes at most {MAX_QUERY_ITEMS} names")
        if query is not None and name == SEARCH:  # the work stays small: the first words
            query = [" ".join(query)[:MAX_QUERY_CHARS]]
        if query is None:
            ref = tool_ref(name)
            usage = f'{ref} takes a string (or an array of strings), e.g. {ref}("word")'
            return _mistake(name, data, usage)
        try:
            text = self.describe(query) if name == DESCRIBE else self.search(" ".join(query))
        except LookupError as exc:
            return _mistake(name, data, str(exc))
        return Resolve.OK, json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")

    def _visible(self) -> list[Binding]:
        from ._describe import visible

        return [b for b, _ in visible(self.bindings, self.policy)]

    def describe(self, names: list[str]) -> str:
        """The full TypeScript declaration of the tools named.

        Raises LookupError naming what is not a tool the script can call.
        """
        by_name = {b.name: b for b in self._visible()}
        missing = [n for n in names if n not in by_name]
        if missing:
            import difflib

            hints = []
            for n in missing:
                close = difflib.get_close_matches(n, list(by_name), n=1)
                hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise LookupError(
                f"tools.{DESCRIBE}: no tool named {', '.join(hints)}; the tools are: "
                + _listing(list(by_name))
            )
        chosen = [by_name[n] for n in dict.fromkeys(names)]
        from ._describe import describe

        return describe(chosen, self.policy, shapes=self.shapes, full=True, header=False)

    def search(self, query: str) -> str:
        """The declaration of the tools that best match `query`'s words (name words
        count most), or a line saying none does and listing the names."""
        words = set(_WORD.findall(query.lower())[:MAX_QUERY_ITEMS])
        tools = self._visible()
        scored: list[tuple[float, int, Binding]] = []
        for i, b in enumerate(tools):
            score = _score(words, query.lower().strip(), b)
            if score > 0:
                scored.append((-score, i, b))
        scored.sort(key=lambda t: (t[0], t[1]))
        if scored:  # keep the tools that match about as well as the best one
            floor = -scored[0][0] / 2
            scored = [t for t in scored if -t[0] >= floor]
        if not scored:
            return f"// no tool matches {json.dumps(query)}; the tools are: " + _listing(
                [b.name for b in tools]
            )
        best = [b for _, _, b in scored[:SEARCH_LIMIT]]
        from ._describe import describe

        text = describe(best, self.policy, shapes=self.shapes, full=True, header=False)
        more = [b.name for _, _, b in scored[SEARCH_LIMIT:]]
        if more:
            text += f"\n// {len(more)} more match: " + _listing(more)
        return text


#: what one $describe/$search call looks at (they run on the run's own thread): the
#: names one $describe may name, and the characters (then words) of a $search
MAX_QUERY_ITEMS = 64
MAX_QUERY_CHARS = 4096


def _mistake(name: str, data: bytes, message: str) -> tuple[Resolve, bytes]:
    """A TypeError for the script: the call's text, NUL, the message (as the dispatcher
    answers invalid arguments)."""
    return Resolve.BAD_ARGS, (call_text(name, data) + "\0" + message).encode(
        "utf-8", "surrogatepass"
    )


def _query(args: Any) -> list[str] | None:
    """The names or words of a call: a string, strings, or an object holding them."""
    if isinstance(args, dict) and len(args) == 1:
        args = next(iter(args.values()))
    if isinstance(args, str):
        return [args]
    if isinstance(args, list) and args and all(isinstance(a, str) for a in args):
        return list(args)
    return None


def _score(words: set[str], phrase: str, b: Binding) -> float:
    name = b.name.lower()
    name_words = set(_WORD.findall(name))
    desc = " ".join(b.description.split()).lower()
    desc_words = set(_WORD.findall(desc))
    score = 0.0
    if phrase and phrase in name:
        score += 4
    for w in words:
        if w in name_words:
            score += 3
        elif w in name:
            score += 2
        if w in desc_words:
            score += 1
        elif len(w) > 3 and any(d.startswith(w) for d in desc_words):
            score += 0.5
    return score


def _listing(names: list[str], limit: int = 60) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
