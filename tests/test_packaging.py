"""What users install: the three distributions as PyPI would serve them.

Each package is an sdist and one pure-Python wheel (``py3-none-any``): the guest is
plain WebAssembly, compiled when the core's wheel is built from its sdist and shipped
inside it. The wheels are built here the way ``python -m build`` builds them (sdist
first, the wheel from the sdist alone), then installed into a fresh virtual environment
(no zig, no clone, dependencies from the index), where the README's example, each
integration's quickstart and the ``clambot`` command run as a user would run them.

The release workflow sets CLAMBOT_TEST_DIST to its own dist/ directory, so the files it
uploads are the files tested here.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import sys
import tarfile
import types
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

#: distribution name -> (its project directory, its import package)
PACKAGES = {
    "clambot-tools": (ROOT, "clambot_tools"),
    "langchain-clambot": (ROOT / "integrations" / "langchain", "langchain_clambot"),
    "llama-index-tools-clambot": (
        ROOT / "integrations" / "llama_index",
        "llama_index.tools.clambot",
    ),
}
ADAPTERS = ("langchain-clambot", "llama-index-tools-clambot")

#: generous: on a busy 2-core machine the core's wheel compiles the guest (~30 s idle)
BUILD_TIMEOUT_S = 900
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 300


def _pyproject(project: Path) -> dict[str, Any]:
    with (project / "pyproject.toml").open("rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    return data


def _project(dist: str) -> dict[str, Any]:
    project = _pyproject(PACKAGES[dist][0])["project"]
    assert isinstance(project, dict)
    return project


def _file_name(dist: str) -> str:
    return dist.replace("-", "_")


def _run(
    cmd: list[str],
    timeout: float,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> str:
    """Run `cmd` to completion and return its output; fail the test if it fails."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, input=stdin
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the three sdists and the wheels built from them."""
    given = os.environ.get("CLAMBOT_TEST_DIST")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "CLAMBOT_GUEST_WASM"}
    for project, _ in PACKAGES.values():
        # no build isolation: the backend and zig are the pinned ones of this venv
        # (constraints.txt), so nothing is downloaded but the QuickJS-NG sdist (cached)
        cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)]
        _run([*cmd, str(project)], BUILD_TIMEOUT_S, env=env)
    return out


def _wheel(dist_dir: Path, dist: str) -> Path:
    [wheel] = dist_dir.glob(f"{_file_name(dist)}-*.whl")
    return wheel


def _sdist(dist_dir: Path, dist: str) -> Path:
    [sdist] = dist_dir.glob(f"{_file_name(dist)}-*.tar.gz")
    return sdist


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(zf.read(name).decode())


def test_each_package_is_an_sdist_and_one_pure_python_wheel(dist: Path) -> None:
    for name in PACKAGES:
        version = _project(name)["version"]
        assert _wheel(dist, name).name == f"{_file_name(name)}-{version}-py3-none-any.whl"
        assert _sdist(dist, name).name == f"{_file_name(name)}-{version}.tar.gz"
    assert len(list(dist.glob("*.whl"))) == len(PACKAGES)


def test_the_sdist_builds_the_guest_from_source_to_the_same_bytes(dist: Path) -> None:
    with tarfile.open(_sdist(dist, "clambot-tools")) as tar:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames()}
    # what the build needs, and none of QuickJS-NG's own sources nor a built guest
    assert {"quickjs_wasm/guest.c", "quickjs_wasm/build.py", "hatch_build.py"} <= names
    assert {"LICENSE", "README.md", "CHANGELOG.md"} <= names
    assert not [n for n in names if n.endswith((".wasm", ".stamp", "quickjs.c", "quickjs.h"))]
    # the wheel's guest was compiled from that sdist alone, and is byte for byte the one
    # this checkout built: the build is reproducible
    with zipfile.ZipFile(_wheel(dist, "clambot-tools")) as zf:
        shipped = zf.read("clambot_tools/_guest.wasm")
    installed = (ROOT / "clambot_tools" / "_guest.wasm").read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(installed).hexdigest()


def test_wheels_hold_the_code_its_types_and_the_license_and_nothing_else(dist: Path) -> None:
    for name, (_, package) in PACKAGES.items():
        with zipfile.ZipFile(_wheel(dist, name)) as zf:
            files = zf.namelist()
        top = package.replace(".", "/")
        info = f"{_file_name(name)}-{_project(name)['version']}.dist-info"
        assert f"{top}/__init__.py" in files and f"{top}/py.typed" in files
        assert f"{info}/licenses/LICENSE" in files
        stray = [f for f in files if not f.startswith((f"{top}/", f"{info}/"))]
        assert stray == [], f"{name} ships files outside its package: {stray}"
        assert not [f for f in files if "/tests/" in f or f.endswith((".c", ".h"))]
    with zipfile.ZipFile(_wheel(dist, "llama-index-tools-clambot")) as zf:
        # a namespace package: llama_index/ and llama_index/tools/ belong to llama-index
        assert "llama_index/__init__.py" not in zf.namelist()
        assert "llama_index/tools/__init__.py" not in zf.namelist()
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    for project, _ in PACKAGES.values():
        assert (project / "LICENSE").read_text() == license_text


def test_metadata_is_what_pypi_langchain_and_llamahub_read(dist: Path) -> None:
    urls = set()
    for name in PACKAGES:
        meta = _metadata(_wheel(dist, name))
        assert meta["License-Expression"] == "MIT"
        assert meta["Requires-Python"] == ">=3.10"
        classifiers = meta.get_all("Classifier") or []
        for needed in ("Python :: 3.10", "Typing :: Typed", "Development Status"):
            assert any(needed in c for c in classifiers), (name, needed)
        assert meta["Keywords"]
        assert meta["Description-Content-Type"] == "text/markdown"
        project_urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
        urls.add(project_urls["Repository"])
        # test pins are dependency groups, not extras anyone can install
        assert not {"test", "dev"} & set(meta.get_all("Provides-Extra") or [])
    assert len(urls) == 1  # the three point at the one repository
    core_version = _project("clambot-tools")["version"]
    bounds = set()
    for name in ADAPTERS:
        [core] = [
            r
            for r in _metadata(_wheel(dist, name)).get_all("Requires-Dist") or []
            if r.startswith("clambot-tools")
        ]
        bounds.add(core)
        low, high = re.fullmatch(r"clambot-tools<([\d.]+),>=([\d.]+)", core).groups()
        assert _version(high) <= _version(str(core_version)) < _version(low)
    assert len(bounds) == 1  # both adapters bound the core the same way
    langchain = _metadata(_wheel(dist, "langchain-clambot"))
    extras = set(langchain.get_all("Provides-Extra") or [])
    assert {"langgraph", "agents"} <= extras  # JSSessionMiddleware needs `langchain`
    llamahub = _pyproject(PACKAGES["llama-index-tools-clambot"][0])["tool"]["llamahub"]
    module = importlib.import_module(llamahub["import_path"])
    assert set(llamahub["class_authors"]) <= set(module.__all__)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_twine_accepts_every_file(dist: Path) -> None:
    files = sorted(str(p) for p in dist.iterdir() if p.suffix in (".whl", ".gz"))
    _run([sys.executable, "-m", "twine", "check", "--strict", *files], RUN_TIMEOUT_S)


def _readme_block(readme: Path, after: str, fence: str = "```") -> str:
    text = readme.read_text(encoding="utf-8").split(after, 1)[1]
    match = re.search(rf"{fence}python\n(.*?){fence}", text, re.S)
    assert match is not None
    return match.group(1)


#: snippet name -> (its code, lines its output must hold)
def _examples() -> dict[str, tuple[str, list[str]]]:
    lc = PACKAGES["langchain-clambot"][0] / "README.md"
    li = PACKAGES["llama-index-tools-clambot"][0] / "README.md"
    return {
        "readme_use": (
            _readme_block(ROOT / "README.md", "## Use\n"),
            ["True 70.7 [] None", "1", "Oslo"],
        ),
        "langchain_quickstart": (
            _readme_block(lc, "## Quickstart", fence="````"),
            [
                'Result (JSON): [{"city":"Paris","temp_c":21.5,"people":2100000}',
                "Error (runtime): TypeError: cannot read property 'speed' of undefined",
            ],
        ),
        "llama_index_quickstart": (
            _readme_block(li, "## Quickstart"),
            ['Result (JSON): {"usd":50,"items":3}', "Error (binding_failed): TypeError"],
        ),
    }


def test_the_readme_example_prints_what_its_comments_say() -> None:
    code, expected = _examples()["readme_use"]
    out = _run([sys.executable, "-c", code], RUN_TIMEOUT_S, cwd=ROOT)
    assert out.splitlines() == expected


def test_wheels_install_into_a_fresh_venv_and_the_readme_examples_run(
    dist: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], RUN_TIMEOUT_S)
    python = venv / "bin" / "python"
    wheels = [str(_wheel(dist, name)) for name in PACKAGES]
    # as a user would: dependencies from the index, nothing from this checkout
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *wheels],
        INSTALL_TIMEOUT_S,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CLAMBOT_"))}
    env["CLAMBOT_CACHE_DIR"] = str(tmp_path / "cache")  # the first use compiles anew
    work = tmp_path / "work"
    work.mkdir()
    where = _run([str(python), "-c", _WHERE], RUN_TIMEOUT_S, cwd=work, env=env).splitlines()
    assert where[0].startswith(str(venv)) and where[1] == "no ziglang"
    for name, (code, expected) in _examples().items():
        script = work / f"{name}.py"
        script.write_text(code, encoding="utf-8")
        out = _run([str(python), str(script)], RUN_TIMEOUT_S, cwd=work, env=env)
        for line in expected:
            assert line in out, f"{name}: {line!r} not in\n{out}"
    clambot = _run(
        [str(venv / "bin" / "clambot"), "run", "--json", "-"],
        RUN_TIMEOUT_S,
        cwd=work,
        env=env,
        stdin="[1, 2, 3].map(x => x * 2)",
    )
    assert json.loads(clambot)["value"] == [2, 4, 6]
    # without the `agents` extra, the one name that needs langchain says how to get it
    hint = _run([str(python), "-c", _MIDDLEWARE], RUN_TIMEOUT_S, cwd=work, env=env)
    assert hint == "JSSessionMiddleware needs the langchain package: " + (
        "pip install 'langchain-clambot[agents]'\n"
    )


_MIDDLEWARE = """
try:
    from langchain_clambot import JSSessionMiddleware
except ImportError as exc:
    print(exc)
"""

_WHERE = """
import importlib.util, clambot_tools
print(clambot_tools.__file__)
print("ziglang" if importlib.util.find_spec("ziglang") else "no ziglang")
"""


def test_each_version_is_its_distributions() -> None:
    for name, (_, package) in PACKAGES.items():
        module = importlib.import_module(package)
        assert module.__version__ == _project(name)["version"]
        assert module.__version__ == importlib.metadata.version(name)


@pytest.mark.parametrize("package", [package for _, package in PACKAGES.values()])
def test_every_public_name_is_importable_documented_and_public(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert len(names) == len(set(names))
    undocumented = []
    for name in names:
        assert not name.startswith("_"), f"{package} exports the private {name}"
        obj = getattr(module, name)  # importable, lazily imported names included
        exec(f"from {package} import {name}", {})
        if not _documented(module, name, obj):
            undocumented.append(name)
    assert undocumented == []


def _documented(package: types.ModuleType, name: str, obj: object) -> bool:
    """A module, class or function with its own docstring, or a constant or type alias
    with a ``#:`` comment where it is assigned."""
    if inspect.isclass(obj) or inspect.isroutine(obj) or isinstance(obj, types.ModuleType):
        return bool(obj.__doc__ and obj.__doc__.strip())
    root = Path(package.__file__).parent  # type: ignore[arg-type]
    for source in root.rglob("*.py"):
        lines = source.read_text(encoding="utf-8").splitlines()
        for node in ast.parse("\n".join(lines)).body:
            targets = _assigned(node)
            if name in targets and lines[node.lineno - 2].strip().startswith("#:"):
                return True
    return False


def _assigned(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def test_the_dev_tools_are_the_locked_versions() -> None:
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for tool in ("ruff", "mypy", "pytest", "hypothesis", "hatchling", "ziglang", "build"):
        assert tool in pins
    installed = {}
    for tool in pins:
        try:
            installed[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            continue  # pinned in case something brings it in; nothing did here
    stale = {t: (v, pins[t]) for t, v in installed.items() if v != pins[t]}
    assert stale == {}, f"installed != constraints.txt (run make install): {stale}"
    # building without isolation (here, make dist) uses these: the same as isolation would
    requires = _pyproject(ROOT)["build-system"]["requires"]
    assert sorted(requires) == sorted(f"{t}=={pins[t]}" for t in ("hatchling", "ziglang"))
