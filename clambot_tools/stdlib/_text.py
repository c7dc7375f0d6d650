"""The text encodings the standard bindings decode: ordinary ones, all linear in time.

Python's codec registry also holds transforms and exotic codecs that a script must not
pick: ``punycode`` (and ``idna``, which uses it) takes time quadratic in the input, so
1 MiB of it runs for minutes; ``zlib``, ``bz2``, ``base64``, ``uu``, ``hex``, ``rot13``
are byte or string transforms, not text encodings; ``unicode_escape`` and ``utf-7``
turn plain bytes into other characters than the file holds. Only the encodings below,
whose decoders are C code that reads each byte once, are used for files and for HTTP
responses (whose charset comes from a server).
"""

from __future__ import annotations

import codecs

#: canonical names (as ``codecs.lookup(name).name`` spells them); aliases such as
#: ``utf8``, ``latin-1``, ``windows-1252`` or ``sjis`` map onto them
TEXT_ENCODINGS: tuple[str, ...] = (
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
    "ascii",
    "iso8859-1",
    *(f"iso8859-{n}" for n in range(2, 17) if n != 12),
    *(f"cp{n}" for n in range(1250, 1259)),
    "cp437",
    "cp850",
    "cp852",
    "cp866",
    "koi8-r",
    "koi8-u",
    "mac-roman",
    "shift_jis",
    "cp932",
    "euc_jp",
    "gb2312",
    "gbk",
    "gb18030",
    "big5",
    "cp950",
    "euc_kr",
    "cp949",
)
_ALLOWED = frozenset(TEXT_ENCODINGS)


def text_codec(name: str) -> codecs.CodecInfo:
    """The codec for the text encoding `name` (any alias Python knows).

    Raises LookupError, with a message for the script, if `name` is unknown or not one
    of `TEXT_ENCODINGS`.
    """
    try:
        if not isinstance(name, str) or len(name) > 64:
            raise LookupError(name)
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        raise LookupError(f"unknown text encoding {name!r}{_USE}") from None
    if info.name not in _ALLOWED:
        raise LookupError(f"{name!r} is not a text encoding this tool decodes{_USE}")
    return info


_USE = "; use utf-8, utf-16, latin-1, cp1252, shift_jis or another ordinary text encoding"
