"""Build the ClamBot guest: QuickJS-NG + guest.c -> a wasm32-wasi reactor module.

QuickJS-NG's C sources come from the pinned ``quickjs-ng`` sdist on PyPI, checked by
sha256, and are never committed. The compiler is the ``ziglang`` wheel. Run::

    python quickjs_wasm/build.py OUTPUT.wasm

Environment:
    CLAMBOT_QUICKJS_SDIST   path of a local copy of the sdist (still checked by sha256)
    CLAMBOT_BUILD_CACHE     where the downloaded sdist is kept (default ~/.cache/clambot-tools)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

QUICKJS_NG_VERSION = "0.17.0.2"
SDIST_NAME = f"quickjs_ng-{QUICKJS_NG_VERSION}.tar.gz"
SDIST_SHA256 = "43d2e48272208721a7aaea8e3f02d4b9318f12ef20cc4f5421b59d9a470706ef"
SOURCES = ("quickjs.c", "libregexp.c", "libunicode.c", "dtoa.c")
#: C stack placed first in linear memory (zig's default); QuickJS's limit sits below it.
C_STACK_BYTES = 1024 * 1024
HERE = Path(__file__).resolve().parent

CFLAGS = [
    "-target",
    "wasm32-wasi",
    "-mexec-model=reactor",
    "-O2",
    "-s",
    "-D_GNU_SOURCE",
    "-fno-strict-aliasing",
    f"-Wl,-z,stack-size={C_STACK_BYTES}",
    # keep build paths out of the module (assert messages), so builds are reproducible
    "-fmacro-prefix-map={src}=quickjs-ng",
    "-fmacro-prefix-map={guest}=guest",
    "-Wno-everything",
]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_from_pypi(dest: Path) -> None:
    index = os.environ.get("CLAMBOT_PYPI_JSON", "https://pypi.org/pypi/quickjs-ng/json")
    with urllib.request.urlopen(index, timeout=60) as resp:
        meta = json.load(resp)
    for entry in meta["releases"].get(QUICKJS_NG_VERSION, []):
        if entry["filename"] == SDIST_NAME:
            url = urllib.parse.urljoin(index, entry["url"])
            break
    else:
        raise RuntimeError(f"{SDIST_NAME} is not listed on PyPI")
    tmp = dest.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as resp, tmp.open("wb") as fh:
        shutil.copyfileobj(resp, fh)
    tmp.replace(dest)


def _download_with_pip(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "-d",
                tmp,
                f"quickjs-ng=={QUICKJS_NG_VERSION}",
            ],
            check=True,
            capture_output=True,
        )
        shutil.copy(Path(tmp) / SDIST_NAME, dest)


def fetch_sdist() -> Path:
    """Return a verified copy of the pinned sdist, downloading it if needed.

    Raises RuntimeError if no copy with the pinned sha256 can be had.
    """
    local = os.environ.get("CLAMBOT_QUICKJS_SDIST")
    if local:
        path = Path(local)
        if _sha256(path) != SDIST_SHA256:
            raise RuntimeError(f"{path} does not have the pinned sha256 {SDIST_SHA256}")
        return path
    cache = Path(
        os.environ.get("CLAMBOT_BUILD_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clambot-tools"
    )
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / SDIST_NAME
    if path.exists() and _sha256(path) == SDIST_SHA256:
        return path
    errors = []
    for fetch in (_download_from_pypi, _download_with_pip):
        try:
            fetch(path)
        except Exception as exc:  # noqa: BLE001 - try the next way, report all
            errors.append(f"{fetch.__name__}: {exc}")
            continue
        if _sha256(path) == SDIST_SHA256:
            return path
        errors.append(f"{fetch.__name__}: sha256 mismatch")
        path.unlink()
    raise RuntimeError("could not fetch the quickjs-ng sdist: " + "; ".join(errors))


def extract_sources(sdist: Path, dest: Path) -> Path:
    """Extract upstream-quickjs/ (C files and headers only) into `dest`."""
    out = dest / "upstream-quickjs"
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"quickjs_ng-{QUICKJS_NG_VERSION}/upstream-quickjs/"
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if not name.startswith(prefix) or not member.isfile():
                continue
            rel = name[len(prefix) :]
            if "/" in rel or not rel.endswith((".c", ".h")):
                continue
            src = tar.extractfile(member)
            assert src is not None
            (out / rel).write_bytes(src.read())
    missing = [s for s in SOURCES if not (out / s).exists()]
    if missing:
        raise RuntimeError(f"the sdist lacks {missing}")
    return out


def build(output: Path) -> Path:
    """Compile the guest to `output`; returns it. Raises on any failure."""
    sdist = fetch_sdist()
    with tempfile.TemporaryDirectory(prefix="clambot-guest-") as tmp:
        src = extract_sources(sdist, Path(tmp))
        guest = HERE / "guest.c"
        flags = [f.format(src=src, guest=HERE) for f in CFLAGS]
        tmp_out = Path(tmp) / "guest.wasm"
        cmd = [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            *flags,
            f"-I{src}",
            "-o",
            str(tmp_out),
            str(guest),
            *(str(src / s) for s in SOURCES if s != "quickjs.c"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"zig cc failed:\n{proc.stdout}\n{proc.stderr}")
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_out, output)
    return output


if __name__ == "__main__":
    default = HERE.parent / "clambot_tools" / "_guest.wasm"
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    built = build(target)
    print(f"{built}: {built.stat().st_size} bytes, sha256 {_sha256(built)}")
