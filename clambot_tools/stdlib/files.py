"""File bindings confined to one root directory.

``bindings(root)`` grants ``fs_read_text``, ``fs_read_bytes``, ``fs_list`` and ``fs_stat``;
with ``write=True`` also ``fs_write_text``, ``fs_write_bytes``, ``fs_mkdir`` and
``fs_delete``.

How paths stay inside the root: every call opens the root directory and walks the
path one component at a time with ``openat``-style calls relative to the descriptor of
the directory reached so far, each opened with ``O_NOFOLLOW``. Paths from the script
may not be absolute nor contain ``..`` or NUL. Symlinks met on the way are read
(``readlinkat``) and their target is walked the same way: relative targets from the
directory that holds the link, absolute ones only if they lie under the root, and a
``..`` that would climb above the root is refused. Because each step opens the entry
it checked with ``O_NOFOLLOW``, replacing an entry by a symlink between the check and
the open makes the open fail rather than escape. What this does not cover: hard links
to outside files placed in the root by someone else, and a host process moving a
directory out of the root while a call is walking through it.

The sandbox's own compiled-module cache (``clambot_tools._engine.cache_dir()``) holds
native code that later processes map and run, so it is out of bounds: a root that is,
contains or lies inside that directory is refused when the bindings are made, and at
every call each directory the walk opens, and the file it ends on, is compared with it
by device and inode (so a symlink, a bind mount or a hard link cannot reach it).

Text is decoded only with an allow-list of ordinary text encodings (UTF-8/16/32,
ASCII, Latin-1, the Windows and ISO 8859 code pages, common CJK ones), all linear in
the size of the file, which is capped before it is read.

Needs POSIX ``*at`` calls (``dir_fd``) and ``O_NOFOLLOW``/``O_DIRECTORY``: Linux.
"""

from __future__ import annotations

import errno
import os
import stat
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from .. import Binding, ConfigError, binding, current_call
from .._engine import cache_dir
from . import ToolError
from ._text import text_codec

_MIB = 1 << 20
_MAX_PATH_CHARS = 4096
#: symlinks followed in one path before giving up (Linux's own limit is 40)
_MAX_SYMLINKS = 40

_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
_O_NOCTTY: int = getattr(os, "O_NOCTTY", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not hang the call; it is then refused as not a file
_READ_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK | _O_NOCTTY
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK | _O_NOCTTY

_ARGS = ConfigDict(extra="forbid", strict=True)

EntryType = Literal["file", "dir", "symlink", "other"]


class Entry(TypedDict):
    """One entry of a listing; `size` is in bytes for files, else None."""

    name: str
    type: EntryType
    size: int | None


class Listing(TypedDict):
    """What the list binding returns."""

    path: str
    entries: list[Entry]
    truncated: bool


class FileInfo(TypedDict):
    """What the stat binding returns; `modified` is ISO 8601 in UTC."""

    path: str
    type: EntryType
    size: int | None
    modified: str


class Written(TypedDict):
    """What the write bindings return."""

    path: str
    bytes_written: int


class Made(TypedDict):
    """What the mkdir binding returns."""

    path: str
    created: bool


class Deleted(TypedDict):
    """What the delete binding returns."""

    path: str
    deleted: EntryType


class _PathArgs(BaseModel):
    model_config = _ARGS
    path: str = Field(description="path relative to the files root, '/'-separated")


class _OptionalPathArgs(BaseModel):
    model_config = _ARGS
    path: str = Field(".", description="directory relative to the files root; '.' is the root")


class _ReadTextArgs(BaseModel):
    model_config = _ARGS
    path: str = Field(description="path relative to the files root, '/'-separated")
    encoding: str = Field(
        "utf-8",
        description="text encoding of the file: utf-8 (default), utf-16, latin-1, "
        "cp1252, shift_jis, ... (ordinary text encodings only)",
    )


class _WriteTextArgs(BaseModel):
    model_config = _ARGS
    path: str = Field(description="path relative to the files root, '/'-separated")
    text: str = Field(description="the text to write, encoded as UTF-8")
    append: bool = Field(False, description="add to the end instead of replacing the file")


class _WriteBytesArgs(BaseModel):
    model_config = _ARGS
    path: str = Field(description="path relative to the files root, '/'-separated")
    base64: str = Field(description="the bytes to write, base64-encoded")


def bindings(
    root: str | os.PathLike[str],
    *,
    write: bool = False,
    max_read_bytes: int = _MIB,
    max_write_bytes: int = _MIB,
    max_entries: int = 1000,
    prefix: str = "fs_",
) -> list[Binding]:
    """File bindings confined to the directory `root`.

    Read bindings (effect ``read``): ``<prefix>read_text``, ``<prefix>read_bytes``,
    ``<prefix>list``, ``<prefix>stat``. With ``write=True`` also (effect ``write``):
    ``<prefix>write_text``, ``<prefix>write_bytes``, ``<prefix>mkdir``,
    ``<prefix>delete``.

    Args:
        root: the directory scripts may use; it must exist. Symlinks inside it are
            followed only while they stay inside it. Grant a dedicated directory: a
            write root holding code or configuration that other programs run (a home
            directory) gives scripts what those programs can do.
        write: also grant the bindings that create, change and delete files.
        max_read_bytes: largest file a read returns (the sandbox's
            ``Limits.max_result_bytes`` caps results too; base64 adds a third).
        max_write_bytes: most bytes one write call may write.
        max_entries: most entries one listing returns (then ``truncated`` is true).
        prefix: prefix of the binding names.

    Returns the bindings to pass to ``Sandbox(bindings=...)``. The calls raise
    ToolError with a message for the script, which never shows the host path of root.

    Raises ConfigError if `root` is not a directory, is, contains or lies inside the
    sandbox's compiled-module cache (``~/.cache/clambot-tools`` or
    ``$CLAMBOT_CACHE_DIR``), a cap is not a positive int, or the platform lacks
    ``O_NOFOLLOW``/``dir_fd`` support.
    """
    _check_platform()
    for cap_name, cap in (
        ("max_read_bytes", max_read_bytes),
        ("max_write_bytes", max_write_bytes),
        ("max_entries", max_entries),
    ):
        if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
            raise ConfigError(f"files.bindings: {cap_name} must be an int > 0, got {cap!r}")
    if not isinstance(prefix, str):
        raise ConfigError("files.bindings: prefix must be a str")
    root_str = os.fspath(root)
    if not isinstance(root_str, str) or not os.path.isdir(root_str):
        raise ConfigError(f"files.bindings: root {root_str!r} is not a directory")
    real_root = os.path.realpath(root_str)
    cache = _Cache(cache_dir())
    cache.refuse_root(real_root)
    fs = _Root(real_root, max_read_bytes, max_write_bytes, max_entries, prefix, cache)
    return fs.bindings(write=write)


def _check_platform() -> None:
    needed = (os.open, os.stat, os.mkdir, os.unlink, os.rmdir, os.readlink)
    if (
        not (_O_NOFOLLOW and _O_DIRECTORY)
        or not all(f in os.supports_dir_fd for f in needed)
        or os.scandir not in os.supports_fd
    ):
        raise ConfigError("files.bindings needs O_NOFOLLOW, O_DIRECTORY and dir_fd support (Linux)")


_Identity = tuple[int, int]  # (st_dev, st_ino)
#: entries of the cache directory compared with a hard-linked file, at most
_MAX_CACHE_ENTRIES = 1000


def _identity(st: os.stat_result) -> _Identity:
    return st.st_dev, st.st_ino


class _Cache:
    """The compiled-module cache directory, which no path of the files bindings may
    reach: its files are native code that later processes map and run."""

    def __init__(self, path: os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.path.realpath(path)
        self.known: set[_Identity] = set()
        if self.path is not None:
            try:
                self.known.add(_identity(os.stat(self.path)))
            except OSError:
                pass

    def identities(self) -> set[_Identity]:
        """The directory as it was when the bindings were made, and as it is now."""
        if self.path is None:
            return self.known
        try:
            return self.known | {_identity(os.stat(self.path))}
        except OSError:
            return self.known

    def refuse_root(self, real_root: str) -> None:
        """Raise ConfigError if `real_root` is the cache directory, contains it or lies
        inside it (compared by device and inode, not by name)."""
        if self.path is None:
            return
        try:
            root_id = _identity(os.stat(real_root))
            below = {_identity(os.stat(d)) for d in _self_and_parents(real_root)}
            above = {_identity(os.stat(d)) for d in _self_and_parents(self.path)}
        except OSError:
            raise ConfigError(f"files.bindings: root {real_root!r} cannot be checked") from None
        if below & self.identities():
            raise ConfigError(
                f"files.bindings: root {real_root!r} is inside clambot-tools' compiled-"
                "module cache, which scripts must never reach; choose another directory"
            )
        if root_id in above:
            raise ConfigError(
                f"files.bindings: root {real_root!r} contains clambot-tools' compiled-"
                f"module cache ({self.path}), which holds native code that scripts must "
                "never reach; grant a directory that does not contain it (e.g. a "
                "dedicated workspace), or move the cache with CLAMBOT_CACHE_DIR"
            )

    def check_dir(self, fd: int, shown: str) -> None:
        """Raise ToolError if the open directory `fd` is the cache directory."""
        if _identity(os.fstat(fd)) in self.identities():
            raise _forbidden(shown)

    def check_entry(self, st: os.stat_result, shown: str) -> None:
        """Raise ToolError if `st` is the cache directory or a file in it (a hard link:
        a file with a single link cannot be in the cache, as it is in the root)."""
        if stat.S_ISDIR(st.st_mode):
            if _identity(st) in self.identities():
                raise _forbidden(shown)
        elif st.st_nlink > 1 and _identity(st) in self._entries():
            raise _forbidden(shown)

    def _entries(self) -> set[_Identity]:
        found: set[_Identity] = set()
        if self.path is None:
            return found
        pending = [self.path]
        while pending and len(found) < _MAX_CACHE_ENTRIES:
            try:
                with os.scandir(pending.pop()) as it:
                    for entry in it:
                        st = entry.stat(follow_symlinks=False)
                        found.add(_identity(st))
                        if stat.S_ISDIR(st.st_mode):
                            pending.append(entry.path)
            except OSError:
                continue
        return found


def _self_and_parents(path: str) -> list[str]:
    out = [path]
    while True:
        parent = os.path.dirname(out[-1])
        if parent == out[-1]:
            return out
        out.append(parent)


def _forbidden(shown: str) -> ToolError:
    return ToolError(
        f"{shown!r} is in the sandbox's compiled-module cache, which scripts may not "
        "read or change; access refused"
    )


class _Root:
    """The operations behind the bindings, on one root directory and its caps."""

    def __init__(
        self,
        real_root: str,
        max_read: int,
        max_write: int,
        max_entries: int,
        prefix: str,
        cache: _Cache,
    ) -> None:
        self.real_root = real_root
        self.max_read = max_read
        self.max_write = max_write
        self.max_entries = max_entries
        self.prefix = prefix
        self.cache = cache

    def bindings(self, *, write: bool) -> list[Binding]:
        """The Binding objects for this root (the write ones only if `write`)."""
        p = self.prefix
        out = [
            binding(
                self.read_text,
                name=f"{p}read_text",
                args_schema=_ReadTextArgs,
                effects=("read",),
                description=(
                    "Read a text file under the files root and return its contents as a "
                    "string. `path` is relative to the root ('notes/a.txt'); absolute "
                    f"paths and '..' are refused. Files over {self.max_read} bytes are "
                    f"refused. Use {p}read_bytes for binary files."
                ),
            ),
            binding(
                self.read_bytes,
                name=f"{p}read_bytes",
                args_schema=_PathArgs,
                effects=("read",),
                description=(
                    "Read a file under the files root and return its bytes as a base64 "
                    f"string. Files over {self.max_read} bytes are refused."
                ),
            ),
            binding(
                self.list_dir,
                name=f"{p}list",
                args_schema=_OptionalPathArgs,
                effects=("read",),
                description=(
                    "List a directory under the files root (default: the root itself). "
                    "Returns {path, entries: [{name, type, size}], truncated}; type is "
                    "'file', 'dir', 'symlink' or 'other'; size is in bytes for files, "
                    f"else null. At most {self.max_entries} entries, sorted by name."
                ),
            ),
            binding(
                self.stat_path,
                name=f"{p}stat",
                args_schema=_PathArgs,
                effects=("read",),
                description=(
                    "Describe a file or directory under the files root: returns "
                    "{path, type, size, modified} with type 'file' or 'dir' (symlinks "
                    "inside the root are followed), size in bytes for files, modified as "
                    "an ISO 8601 UTC time. Fails if the path does not exist."
                ),
            ),
        ]
        if write:
            out += [
                binding(
                    self.write_text,
                    name=f"{p}write_text",
                    args_schema=_WriteTextArgs,
                    effects=("write",),
                    description=(
                        "Write text (UTF-8) to a file under the files root, replacing it, "
                        "or adding to its end with append: true. Missing parent "
                        "directories are created. Returns {path, bytes_written}. At most "
                        f"{self.max_write} bytes per call."
                    ),
                ),
                binding(
                    self.write_bytes,
                    name=f"{p}write_bytes",
                    args_schema=_WriteBytesArgs,
                    effects=("write",),
                    description=(
                        "Write bytes given as a base64 string to a file under the files "
                        "root, replacing it. Missing parent directories are created. "
                        f"Returns {{path, bytes_written}}. At most {self.max_write} bytes "
                        "per call."
                    ),
                ),
                binding(
                    self.mkdir,
                    name=f"{p}mkdir",
                    args_schema=_PathArgs,
                    effects=("write",),
                    description=(
                        "Create a directory (and its missing parents) under the files "
                        "root. Returns {path, created}; created is false if it already "
                        "existed."
                    ),
                ),
                binding(
                    self.delete,
                    name=f"{p}delete",
                    args_schema=_PathArgs,
                    effects=("write",),
                    description=(
                        "Delete a file, a symlink (not its target) or an empty directory "
                        "under the files root. Returns {path, deleted} with deleted "
                        "'file', 'symlink' or 'dir'. Non-empty directories are refused."
                    ),
                ),
            ]
        return out

    # -- the bindings

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The text of the file at `path`, decoded with `encoding`.

        Raises ToolError if the path is refused or missing, the file is too large,
        `encoding` is not an allowed text encoding, or the text does not decode.
        """
        try:
            codec = text_codec(encoding)
        except LookupError as exc:
            raise ToolError(f"{exc.args[0]} (or {self.prefix}read_bytes for raw bytes)") from None
        data = self._read(path)
        shown = _shown(_split(path, allow_root=False))
        _check_time()
        try:
            return codec.decode(data)[0]
        except UnicodeDecodeError as exc:
            raise ToolError(
                f"{shown!r} is not valid {encoding} text (byte 0x{data[exc.start]:02x} at "
                f"offset {exc.start}); read it with {self.prefix}read_bytes or pass another "
                "encoding"
            ) from None

    def read_bytes(self, path: str) -> str:
        """The bytes of the file at `path`, base64-encoded.

        Raises ToolError if the path is refused or missing or the file is too large.
        """
        return b64encode(self._read(path)).decode("ascii")

    def list_dir(self, path: str = ".") -> Listing:
        """The entries of the directory at `path`: name, type and size, sorted by name.

        Raises ToolError if the path is refused, missing or not a directory.
        """
        parts = _split(path, allow_root=True)
        shown = _shown(parts)
        entries: list[Entry] = []
        truncated = False
        with _os_errors(shown, "list"):
            dfd = self._open_dir(shown, parts)
            try:
                with os.scandir(dfd) as it:
                    for entry in it:
                        _check_time()
                        if len(entries) >= self.max_entries:
                            truncated = True
                            break
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed while we listed
                        kind = _kind(st.st_mode)
                        entries.append(
                            {
                                "name": entry.name,
                                "type": kind,
                                "size": st.st_size if kind == "file" else None,
                            }
                        )
            finally:
                os.close(dfd)
        entries.sort(key=lambda e: e["name"])
        return {"path": shown, "entries": entries, "truncated": truncated}

    def stat_path(self, path: str) -> FileInfo:
        """Type, size and modification time of `path` (symlinks inside the root followed).

        Raises ToolError if the path is refused or missing.
        """
        parts = _split(path, allow_root=True)
        shown = _shown(parts)
        with _os_errors(shown, "stat"):
            dfd, name = self._walk(shown, parts, follow_last=True, make_dirs=False)
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False) if name else os.fstat(dfd)
            finally:
                os.close(dfd)
            self.cache.check_entry(st, shown)
        kind = _kind(st.st_mode)
        modified = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
        return {
            "path": shown,
            "type": kind,
            "size": st.st_size if kind == "file" else None,
            "modified": modified.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }

    def write_text(self, path: str, text: str, append: bool = False) -> Written:
        """Write `text` as UTF-8 to `path`, replacing the file or appending to it.

        Raises ToolError if the path is refused, the text is too large or has unpaired
        surrogates, or the file cannot be written.
        """
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolError(
                "the text contains unpaired surrogate characters, which UTF-8 cannot encode"
            ) from None
        return self._write(path, data, append=append)

    def write_bytes(self, path: str, base64: str) -> Written:
        """Write the bytes that `base64` encodes to `path`, replacing the file.

        Raises ToolError if the path is refused, the data is not base64 or too large,
        or the file cannot be written.
        """
        if len(base64) > 4 * (self.max_write // 3 + 1) + 1024:  # before decoding it
            raise self._too_large_to_write()
        try:
            data = b64decode("".join(base64.split()), validate=True)
        except ValueError:
            raise ToolError("`base64` is not valid base64 data") from None
        return self._write(path, data, append=False)

    def mkdir(self, path: str) -> Made:
        """Create the directory `path` and its missing parents.

        Raises ToolError if the path is refused or something that is not a directory
        is in the way.
        """
        parts = _split(path, allow_root=False)
        shown = _shown(parts)
        created = False
        with _os_errors(shown, "create"):
            dfd, name = self._walk(shown, parts, follow_last=True, make_dirs=True)
            try:
                if name:
                    _check_time()
                    try:
                        os.mkdir(name, 0o777, dir_fd=dfd)
                        created = True
                    except FileExistsError:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        if not stat.S_ISDIR(st.st_mode):
                            raise ToolError(f"{shown!r} exists and is not a directory") from None
            finally:
                os.close(dfd)
        return {"path": shown, "created": created}

    def delete(self, path: str) -> Deleted:
        """Delete the file, symlink or empty directory at `path`.

        Raises ToolError if the path is refused or missing, or a directory is not empty.
        """
        parts = _split(path, allow_root=False)
        shown = _shown(parts)
        with _os_errors(shown, "delete"):
            dfd, name = self._walk(shown, parts, follow_last=False, make_dirs=False)
            try:
                if not name:
                    raise ToolError("the files root itself cannot be deleted")
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                self.cache.check_entry(st, shown)
                _check_time()
                kind = _kind(st.st_mode)
                if kind == "dir":
                    os.rmdir(name, dir_fd=dfd)
                else:
                    os.unlink(name, dir_fd=dfd)
            finally:
                os.close(dfd)
        return {"path": shown, "deleted": kind}

    # -- helpers

    def _read(self, path: str) -> bytes:
        parts = _split(path, allow_root=False)
        shown = _shown(parts)
        with _os_errors(shown, "read"):
            dfd, name = self._walk(shown, parts, follow_last=True, make_dirs=False)
            try:
                if not name:
                    raise ToolError(f"{shown!r} is a directory; list it with {self.prefix}list")
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            finally:
                os.close(dfd)
            try:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode):
                    raise ToolError(f"{shown!r} is a directory; list it with {self.prefix}list")
                if not stat.S_ISREG(st.st_mode):
                    raise ToolError(f"{shown!r} is not a regular file")
                self.cache.check_entry(st, shown)
                if st.st_size > self.max_read:
                    raise self._too_large_to_read(shown, st.st_size)
                data = _read_at_most(fd, self.max_read + 1)
                if len(data) > self.max_read:  # it grew while we read
                    raise self._too_large_to_read(shown, len(data))
                return data
            finally:
                os.close(fd)

    def _write(self, path: str, data: bytes, *, append: bool) -> Written:
        parts = _split(path, allow_root=False)
        shown = _shown(parts)
        if len(data) > self.max_write:
            raise self._too_large_to_write()
        with _os_errors(shown, "write"):
            dfd, name = self._walk(shown, parts, follow_last=True, make_dirs=True)
            try:
                if not name:
                    raise ToolError(f"{shown!r} is a directory")
                # no O_TRUNC: the file is checked (a regular file, not the cache's)
                # before anything in it changes
                flags = _WRITE_FLAGS | (os.O_APPEND if append else 0)
                fd = os.open(name, flags, 0o666, dir_fd=dfd)
            finally:
                os.close(dfd)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ToolError(f"{shown!r} is not a regular file")
                self.cache.check_entry(st, shown)
                _check_time()  # the last moment a write can still be refused whole
                if not append:
                    os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        return {"path": shown, "bytes_written": len(data)}

    def _too_large_to_read(self, shown: str, size: int) -> ToolError:
        return ToolError(
            f"{shown!r} is {size} bytes, more than the {self.max_read}-byte read limit"
        )

    def _too_large_to_write(self) -> ToolError:
        return ToolError(f"the data is larger than the {self.max_write}-byte write limit")

    def _open_root(self) -> int:
        try:
            return os.open(self.real_root, _DIR_FLAGS)
        except OSError:
            raise ToolError("the files root directory is not available") from None

    def _open_dir(self, shown: str, parts: list[str]) -> int:
        """An open descriptor of the directory `parts` names (caller closes it)."""
        dfd, name = self._walk(shown, parts, follow_last=True, make_dirs=False)
        if not name:
            return dfd
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        finally:
            os.close(dfd)
        try:
            self.cache.check_dir(fd, shown)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _walk(
        self, shown: str, parts: list[str], *, follow_last: bool, make_dirs: bool
    ) -> tuple[int, str]:
        """Walk `parts` from the root, following symlinks only while they stay inside it.

        Returns an open descriptor of the directory that holds the last component and
        that component's name (which need not exist yet), or ``""`` when the path ends
        at that directory itself. The caller closes the descriptor. With `follow_last`
        a symlink as last component is followed too; with `make_dirs` missing
        intermediate directories are created.

        Raises ToolError if the path leads outside the root, an intermediate directory
        is missing, or symlinks loop; OSError for other failures of the system calls.
        """
        _check_time()
        stack = [self._open_root()]  # descriptors of the directories from the root down
        pending = deque(parts)
        links = 0
        try:
            self.cache.check_dir(stack[0], shown)
            while pending:
                name = pending.popleft()
                if name in ("", "."):
                    continue
                if name == "..":  # only from a symlink's target: script paths have none
                    if len(stack) == 1:
                        raise _escape(shown)
                    os.close(stack.pop())
                    continue
                last = not pending
                if last and not follow_last:
                    return stack.pop(), name
                st = _entry(shown, stack[-1], name, last=last, make_dirs=make_dirs)
                if st is not None and stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise ToolError(f"{shown!r}: too many levels of symbolic links")
                    target = self._link_target(shown, stack, name)
                    pending.extendleft(reversed(target.split("/")))
                    continue
                if last:
                    return stack.pop(), name
                stack.append(_open_subdir(shown, stack[-1], name))
                # checked once open: a bind mount or a swap cannot slip past it
                self.cache.check_dir(stack[-1], shown)
            return stack.pop(), ""
        finally:
            for fd in stack:
                os.close(fd)

    def _link_target(self, shown: str, stack: list[int], name: str) -> str:
        """The target of symlink `name` in ``stack[-1]``, relative to the top of `stack`.

        An absolute target is taken relative to the root, and `stack` is closed down to
        the root's descriptor. Raises ToolError if the target is outside the root.
        """
        target = os.readlink(name, dir_fd=stack[-1])
        if target.startswith("/"):
            below = self._below_root(target)
            if below is None:
                raise _escape(shown)
            while len(stack) > 1:
                os.close(stack.pop())
            target = below
        return target

    def _below_root(self, target: str) -> str | None:
        """The part of absolute `target` below the root, or None if it is not below."""
        base = self.real_root.rstrip("/")
        if target == base:
            return ""
        if target.startswith(base + "/"):
            return target[len(base) + 1 :]
        return None


def _entry(
    shown: str, dfd: int, name: str, *, last: bool, make_dirs: bool
) -> os.stat_result | None:
    """The lstat of `name` in directory `dfd`, or None if it does not exist.

    A missing intermediate directory is made with `make_dirs` (then None too: the caller
    opens it), else it raises ToolError.
    """
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        if last:
            return None
        if not make_dirs:
            raise ToolError(f"no such file or directory: {shown!r}") from None
    _check_time()
    try:
        os.mkdir(name, 0o777, dir_fd=dfd)
    except FileExistsError:
        pass  # made meanwhile; the open that follows checks what it is
    return None


def _open_subdir(shown: str, dfd: int, name: str) -> int:
    """An open descriptor of directory `name` in `dfd`, never through a symlink.

    Raises ToolError if `name` became a symlink since it was looked at; OSError else.
    """
    # O_NOFOLLOW: if the entry became a symlink since the stat, this fails
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and _is_symlink(name, dfd):
            raise ToolError(_ERRNO_MESSAGES[errno.ELOOP].format(path=shown)) from None
        raise


def _check_time() -> None:
    """Raise ToolError if the script's run is over (its deadline passed or it ended):
    a call that runs inline on the run's thread must not outlast it, and nothing may
    be changed for a run that has returned."""
    call = current_call()
    if call is not None and call.cancelled:
        raise ToolError(
            "the script's time limit was reached (or its run ended) before the call "
            "could finish; nothing more was done"
        )


def _split(path: str, *, allow_root: bool) -> list[str]:
    """The components of a script's `path`, checked.

    Raises ToolError for NUL, an absolute path, ``..``, an over-long path, or an
    empty one when `allow_root` is false.
    """
    if "\x00" in path:
        raise ToolError("paths cannot contain NUL characters")
    if len(path) > _MAX_PATH_CHARS:
        raise ToolError(f"the path is longer than {_MAX_PATH_CHARS} characters")
    if path.startswith("/"):
        raise ToolError(
            f"{path!r} is an absolute path; use a path relative to the files "
            "root, like 'notes/todo.txt'"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ToolError(f"{path!r} contains '..'; paths must stay inside the files root")
    if not parts and not allow_root:
        raise ToolError("a path to a file is needed, not the files root")
    return parts


def _shown(parts: list[str]) -> str:
    """The path as messages and results show it: relative, normalised."""
    return "/".join(parts) or "."


def _kind(mode: int) -> EntryType:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _escape(shown: str) -> ToolError:
    return ToolError(
        f"{shown!r} leads outside the files root through a symbolic link; access refused"
    )


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        _check_time()
        chunk = os.read(fd, min(limit - got, _MIB))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


_ERRNO_MESSAGES: dict[int, str] = {
    errno.ENOENT: "no such file or directory: {path!r}",
    errno.ENOTDIR: "{path!r}: a component of the path is not a directory",
    errno.EISDIR: "{path!r} is a directory",
    errno.EEXIST: "{path!r} already exists",
    errno.ENOTEMPTY: "the directory {path!r} is not empty",
    errno.EACCES: "permission denied: {path!r}",
    errno.EPERM: "operation not permitted on {path!r}",
    errno.ELOOP: "{path!r} changed into a symbolic link during the call; refused",
    errno.ENAMETOOLONG: "a name in {path!r} is too long",
    errno.ENOSPC: "no space left to write {path!r}",
    errno.EDQUOT: "disk quota exceeded writing {path!r}",
    errno.EROFS: "the files root is on a read-only file system",
    errno.ENXIO: "{path!r} is not a regular file",
    errno.ETXTBSY: "{path!r} is busy",
}


@contextmanager
def _os_errors(shown: str, doing: str) -> Iterator[None]:
    """Turn an OSError into a ToolError about `shown` (the relative path only: the
    exception's own message could name host paths)."""
    try:
        yield
    except OSError as exc:
        template = _ERRNO_MESSAGES.get(exc.errno or 0)
        if template is not None:
            raise ToolError(template.format(path=shown)) from None
        reason = os.strerror(exc.errno) if exc.errno else "unknown error"
        raise ToolError(f"could not {doing} {shown!r}: {reason}") from None
