"""stdlib.files: a real directory tree with real symlinks, reached through a real Sandbox."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import CallContext, ConfigError, Limits, Policy, RunResult, Sandbox
from clambot_tools._context import enter_call, leave_call
from clambot_tools.stdlib import ToolError, files


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """root/ with files, a subdirectory and symlinks that stay in or lead out of it;
    outside/ beside it holds what no script may reach."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello\n")
    (root / "sub" / "b.txt").write_text("in sub")
    (root / "bin.dat").write_bytes(bytes(range(256)))
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    os.symlink("sub/b.txt", root / "inside_link")  # relative, stays inside
    os.symlink(root / "a.txt", root / "abs_inside")  # absolute, stays inside
    os.symlink("sub", root / "sub_link")  # a directory, inside
    os.symlink("..", root / "sub" / "up")  # back to the root: still inside
    os.symlink("../outside/secret.txt", root / "outside_link")
    os.symlink(outside / "secret.txt", root / "abs_outside")
    os.symlink("../outside", root / "outside_dir")
    os.symlink("../..", root / "sub" / "up2")  # climbs above the root
    os.symlink("loop", root / "loop")
    return root


def sandbox(root: Path, **kwargs: Any) -> Sandbox:
    # these tests are about confinement, not approval: writes run unasked
    return Sandbox(
        bindings=files.bindings(root, **kwargs),
        limits=Limits(timeout_s=5),
        policy=Policy(auto_approve=("write",)),
    )


def failure(res: RunResult, root: Path) -> str:
    """The message of a run that ended on an uncaught failed tool call."""
    assert res.error is not None, res
    assert res.error.kind == "binding_failed", res.error
    assert str(root) not in res.error.message and str(root.parent) not in res.error.message
    return res.error.message


def test_read_list_and_stat(tree: Path) -> None:
    sb = sandbox(tree)
    assert sb.run("await tools.fs_read_text({path: 'a.txt'})").value == "hello\n"
    assert sb.run("await tools.fs_read_text({path: './sub//b.txt'})").value == "in sub"
    b64 = sb.run("await tools.fs_read_bytes({path: 'bin.dat'})").value
    assert base64.b64decode(b64) == bytes(range(256))
    assert (
        sb.run("await tools.fs_read_text({path: 'latin1.txt', encoding: 'latin-1'})").value
        == "café"
    )

    listing = sb.run("await tools.fs_list()").value
    assert listing["path"] == "." and listing["truncated"] is False
    by_name = {e["name"]: e for e in listing["entries"]}
    assert by_name["a.txt"] == {"name": "a.txt", "type": "file", "size": 6}
    assert by_name["sub"]["type"] == "dir" and by_name["sub"]["size"] is None
    assert by_name["outside_link"]["type"] == "symlink"
    assert [e["name"] for e in listing["entries"]] == sorted(by_name)
    sub = sb.run("await tools.fs_list({path: 'sub'})").value
    assert {e["name"] for e in sub["entries"]} == {"b.txt", "up", "up2"}

    st = sb.run("await tools.fs_stat({path: 'a.txt'})").value
    assert st["type"] == "file" and st["size"] == 6 and st["modified"].endswith("Z")
    assert sb.run("await tools.fs_stat({path: '.'})").value["type"] == "dir"


def test_symlinks_that_stay_inside_are_followed(tree: Path) -> None:
    sb = sandbox(tree)
    res = sb.run(
        "[await tools.fs_read_text({path: 'inside_link'}),"
        " await tools.fs_read_text({path: 'abs_inside'}),"
        " await tools.fs_read_text({path: 'sub_link/b.txt'}),"
        " await tools.fs_read_text({path: 'sub/up/a.txt'}),"
        " (await tools.fs_list({path: 'sub_link'})).entries.length,"
        " (await tools.fs_stat({path: 'inside_link'})).type]"
    )
    assert res.value == ["in sub", "hello\n", "in sub", "hello\n", 3, "file"]


@pytest.mark.parametrize(
    "code",
    [
        "await tools.fs_read_text({path: 'outside_link'})",
        "await tools.fs_read_text({path: 'abs_outside'})",
        "await tools.fs_read_text({path: 'outside_dir/secret.txt'})",
        "await tools.fs_read_bytes({path: 'sub/up2/outside/secret.txt'})",
        "await tools.fs_list({path: 'outside_dir'})",
        "await tools.fs_stat({path: 'outside_link'})",
    ],
)
def test_symlinks_leading_outside_are_refused(tree: Path, code: str) -> None:
    msg = failure(sandbox(tree).run(code), tree)
    assert "outside the files root" in msg


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/passwd", "absolute path"),
        (str(Path("/tmp")), "absolute path"),
        ("../outside/secret.txt", "'..'"),
        ("sub/../../outside/secret.txt", "'..'"),
        ("a.txt\\u0000.png", "NUL"),
        ("", "a path to a file is needed"),
        ("missing.txt", "no such file or directory: 'missing.txt'"),
        ("sub", "is a directory"),
        ("a.txt/x", "not a directory"),
        ("loop", "too many levels of symbolic links"),
    ],
)
def test_bad_paths_get_clear_messages(tree: Path, path: str, expected: str) -> None:
    res = sandbox(tree).run(f"await tools.fs_read_text({{path: '{path}'}})")
    assert expected in failure(res, tree)


def test_refusals_are_catchable_errors(tree: Path) -> None:
    res = sandbox(tree).run(
        "try { await tools.fs_read_text({path: 'outside_link'}) } catch (e) { [e.name, e.message] }"
    )
    assert res.value[0] == "Error" and "outside the files root" in res.value[1]


def test_write_bindings_are_off_unless_granted(tree: Path) -> None:
    names = sandbox(tree).run("Object.keys(tools).filter((k) => k[0] !== '$')").value
    assert names == ["fs_read_text", "fs_read_bytes", "fs_list", "fs_stat"]
    res = sandbox(tree).run("await tools.fs_write_text({path: 'x.txt', text: 'x'})")
    assert res.error is not None and res.error.kind == "runtime"  # not a function
    assert not (tree / "x.txt").exists()
    effects = {b.name: b.effects for b in files.bindings(tree, write=True, prefix="f.")}
    assert effects == {
        "f.read_text": ("read",),
        "f.read_bytes": ("read",),
        "f.list": ("read",),
        "f.stat": ("read",),
        "f.write_text": ("write",),
        "f.write_bytes": ("write",),
        "f.mkdir": ("write",),
        "f.delete": ("write",),
    }


def test_write_mkdir_and_delete(tree: Path) -> None:
    sb = sandbox(tree, write=True)
    res = sb.run(
        "const w = await tools.fs_write_text({path: 'new/dir/n.txt', text: 'héllo'});\n"
        "await tools.fs_write_text({path: 'new/dir/n.txt', text: '!', append: true});\n"
        "await tools.fs_write_bytes({path: 'raw.bin', base64: 'AAEC/w=='});\n"
        "const m = [await tools.fs_mkdir({path: 'made/deep'}),"
        " await tools.fs_mkdir({path: 'made/deep'})];\n"
        "[w, m, await tools.fs_delete({path: 'made/deep'}),"
        " await tools.fs_delete({path: 'inside_link'})]"
    )
    assert res.value == [
        {"path": "new/dir/n.txt", "bytes_written": 6},
        [{"path": "made/deep", "created": True}, {"path": "made/deep", "created": False}],
        {"path": "made/deep", "deleted": "dir"},
        {"path": "inside_link", "deleted": "symlink"},
    ]
    assert (tree / "new/dir/n.txt").read_text() == "héllo!"
    assert (tree / "raw.bin").read_bytes() == b"\x00\x01\x02\xff"
    assert (tree / "made").is_dir() and not (tree / "made/deep").exists()
    assert not (tree / "inside_link").is_symlink() and (tree / "sub/b.txt").exists()

    # writing through a symlink that stays inside changes its target
    sb.run("await tools.fs_write_text({path: 'abs_inside', text: 'changed'})")
    assert (tree / "a.txt").read_text() == "changed" and (tree / "abs_inside").is_symlink()

    assert "not empty" in failure(sb.run("await tools.fs_delete({path: 'sub'})"), tree)
    assert "root" in failure(sb.run("await tools.fs_delete({path: '.'})"), tree)
    assert "base64" in failure(
        sb.run("await tools.fs_write_bytes({path: 'x', base64: '**'})"), tree
    )


@pytest.mark.parametrize(
    "code",
    [
        "await tools.fs_write_text({path: 'outside_link', text: 'pwned'})",
        "await tools.fs_write_text({path: 'outside_dir/new.txt', text: 'pwned'})",
        "await tools.fs_write_bytes({path: 'abs_outside', base64: 'cHduZWQ='})",
        "await tools.fs_mkdir({path: 'outside_dir/newdir'})",
        "await tools.fs_delete({path: 'outside_dir/secret.txt'})",
        "await tools.fs_delete({path: 'sub/up2/outside/secret.txt'})",
        "await tools.fs_write_text({path: '../outside/secret.txt', text: 'pwned'})",
    ],
)
def test_writes_cannot_leave_the_root(tree: Path, code: str) -> None:
    outside = tree.parent / "outside"
    failure(sandbox(tree, write=True).run(code), tree)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "top secret"


def test_deleting_a_symlink_to_outside_removes_only_the_link(tree: Path) -> None:
    res = sandbox(tree, write=True).run("await tools.fs_delete({path: 'outside_link'})")
    assert res.value == {"path": "outside_link", "deleted": "symlink"}
    assert (tree.parent / "outside" / "secret.txt").read_text() == "top secret"


def test_size_and_entry_caps(tree: Path) -> None:
    sb = sandbox(tree, write=True, max_read_bytes=6, max_write_bytes=4, max_entries=2)
    assert sb.run("await tools.fs_read_text({path: 'a.txt'})").value == "hello\n"
    msg = failure(sb.run("await tools.fs_read_bytes({path: 'bin.dat'})"), tree)
    assert "256 bytes" in msg and "6-byte read limit" in msg
    msg = failure(sb.run("await tools.fs_write_text({path: 'w.txt', text: 'hello'})"), tree)
    assert "4-byte write limit" in msg
    assert not (tree / "w.txt").exists()
    failure(sb.run("await tools.fs_write_bytes({path: 'w.bin', base64: 'AAAAAAAA'})"), tree)
    assert not (tree / "w.bin").exists()
    listing = sb.run("await tools.fs_list()").value
    assert len(listing["entries"]) == 2 and listing["truncated"] is True


def test_undecodable_text_points_to_read_bytes(tree: Path) -> None:
    msg = failure(sandbox(tree).run("await tools.fs_read_text({path: 'bin.dat'})"), tree)
    assert "not valid utf-8" in msg and "fs_read_bytes" in msg
    msg = failure(
        sandbox(tree).run("await tools.fs_read_text({path: 'a.txt', encoding: 'no-such-codec'})"),
        tree,
    )
    assert "unknown text encoding" in msg


def test_a_fifo_is_refused_without_blocking(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    msg = failure(sandbox(tree).run("await tools.fs_read_text({path: 'pipe'})"), tree)
    assert "not a regular file" in msg


def test_entry_swapped_for_a_symlink_after_the_check_is_refused(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a check-then-open design loses: between the walk's stat of an entry and
    its open, the entry becomes a symlink to outside. O_NOFOLLOW makes the open fail."""
    (tree / "victim.txt").write_text("fine")
    (tree / "victim_dir").mkdir()
    (tree / "victim_dir" / "secret.txt").write_text("fine")
    real_stat = os.stat
    outside = tree.parent / "outside"

    swapped: set[str] = set()

    def racing_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(path, *args, **kwargs)
        if kwargs.get("dir_fd") is None or path in swapped:
            return result
        swapped.add(path)
        if path == "victim.txt":
            os.unlink(tree / "victim.txt")
            os.symlink(outside / "secret.txt", tree / "victim.txt")
        if path == "victim_dir":
            os.rename(tree / "victim_dir", tree / "old_dir")
            os.symlink(outside, tree / "victim_dir")
        return result

    read_text = files.bindings(tree)[0].func
    monkeypatch.setattr(os, "stat", racing_stat)
    with pytest.raises(ToolError, match="changed into a symbolic link"):
        read_text(path="victim.txt")
    with pytest.raises(ToolError, match="changed into a symbolic link"):
        read_text(path="victim_dir/secret.txt")


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        files.bindings(tmp_path / "missing")
    with pytest.raises(ConfigError, match="max_read_bytes"):
        files.bindings(tmp_path, max_read_bytes=0)


# -- the compiled-module cache, codecs, and the run's deadline


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory whose ~/.cache/clambot-tools is the compiled-module cache (a
    stand-in module file in it), and a work directory beside the cache."""
    Sandbox()  # the guest is compiled (process-wide) before the cache moves
    home = tmp_path / "home"
    cache = home / ".cache" / "clambot-tools"
    cache.mkdir(parents=True)
    (cache / "guest-0123.cwasm").write_bytes(b"\x7fELF native code")
    (home / "work").mkdir()
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(cache))
    return home


def test_a_root_that_holds_the_module_cache_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11.5: with files.bindings(HOME, write=True) a script rewrote the cached
    .cwasm, which the next process mapped and ran as native code."""
    cache = home / ".cache" / "clambot-tools"
    (cache / "sub").mkdir()
    link = home.parent / "home_link"
    link.symlink_to(home)
    for root in (home, home / ".cache", link, home.parent):
        with pytest.raises(ConfigError, match="contains clambot-tools' compiled-module cache"):
            files.bindings(root, write=True)
    for root in (cache, cache / "sub", link / ".cache" / "clambot-tools"):
        with pytest.raises(ConfigError, match="inside clambot-tools' compiled-module cache"):
            files.bindings(root)
    # the cache named through a symlink is the same directory
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(link / ".cache" / "clambot-tools"))
    with pytest.raises(ConfigError, match="compiled-module cache"):
        files.bindings(home)
    # a directory beside the cache is fine
    sb = sandbox(home / "work", write=True)
    assert sb.run("await tools.fs_write_text({path: 'a.txt', text: 'ok'})").ok
    assert (cache / "guest-0123.cwasm").read_bytes() == b"\x7fELF native code"


def test_a_hard_link_into_the_module_cache_is_refused(home: Path) -> None:
    """A file of the cache linked into the root is the cache's file: compared by
    device and inode, not by name."""
    cache = home / ".cache" / "clambot-tools"
    work = home / "work"
    os.link(cache / "guest-0123.cwasm", work / "module.bin")
    sb = sandbox(work, write=True)
    for code in (
        "await tools.fs_read_bytes({path: 'module.bin'})",
        "await tools.fs_read_text({path: 'module.bin', encoding: 'latin-1'})",
        "await tools.fs_write_bytes({path: 'module.bin', base64: 'AAAA'})",
        "await tools.fs_write_text({path: 'module.bin', text: 'x', append: true})",
        "await tools.fs_stat({path: 'module.bin'})",
        "await tools.fs_delete({path: 'module.bin'})",
    ):
        assert "compiled-module cache" in failure(sb.run(code), work), code
    assert (cache / "guest-0123.cwasm").read_bytes() == b"\x7fELF native code"
    assert (work / "module.bin").exists()


def test_only_ordinary_text_encodings_are_decoded(tree: Path) -> None:
    """Issue 11.7: fs_read_text with encoding 'punycode' (quadratic time) ran far past
    a 1 s limit; a fast, inline call held the run's own thread meanwhile."""
    (tree / "slow.txt").write_bytes(bytes(range(97, 123)) * 12_000)  # ~20 s of punycode
    sb = Sandbox(bindings=files.bindings(tree), limits=Limits(timeout_s=1))
    t0 = time.monotonic()
    res = sb.run(
        "for (let i = 0; i < 5; i++) await tools.fs_read_text({path: 'a.txt'});"  # inline now
        "await tools.fs_read_text({path: 'slow.txt', encoding: 'punycode'})"
    )
    assert "'punycode' is not a text encoding this tool decodes" in failure(res, tree)
    assert time.monotonic() - t0 < 10
    for encoding in ("idna", "rot13", "uu", "zlib", "base64", "hex", "bz2", "utf-7"):
        code = f"await tools.fs_read_text({{path: 'a.txt', encoding: {encoding!r}}})"
        assert "is not a text encoding this tool decodes" in failure(sb.run(code), tree)
    for encoding in ("latin-1", "ISO-8859-1", "windows-1252", "cp1252"):
        code = f"await tools.fs_read_text({{path: 'latin1.txt', encoding: {encoding!r}}})"
        assert sb.run(code).value == "café"
    (tree / "u16.txt").write_bytes("日本".encode("utf-16"))
    assert sb.run("await tools.fs_read_text({path: 'u16.txt', encoding: 'utf16'})").value == "日本"


def test_calls_of_a_run_that_is_over_do_nothing(tree: Path) -> None:
    """A call served after its run's deadline (inline on the run's thread, or late on
    a pool thread) neither reads nor changes anything."""
    fs = {b.name: b.func for b in files.bindings(tree, write=True)}
    ctx = CallContext("fs", time.monotonic() - 1)  # its deadline has passed
    token = enter_call(ctx)
    try:
        for name, kwargs in (
            ("fs_read_text", {"path": "a.txt"}),
            ("fs_list", {"path": "."}),
            ("fs_write_text", {"path": "a.txt", "text": "changed"}),
            ("fs_write_bytes", {"path": "new.bin", "base64": "AAAA"}),
            ("fs_mkdir", {"path": "newdir"}),
            ("fs_delete", {"path": "a.txt"}),
        ):
            with pytest.raises(ToolError, match="time limit was reached"):
                fs[name](**kwargs)
    finally:
        leave_call(token)
    assert (tree / "a.txt").read_text() == "hello\n"
    assert not (tree / "new.bin").exists() and not (tree / "newdir").exists()
