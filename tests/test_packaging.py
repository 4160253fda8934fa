"""Layout and packaging: three source roots install as one ``gridwatch`` package.

``platform/`` is a plain directory: were it a package, ``import platform`` from the repository
root would shadow the standard library module that ``uuid`` and many others import.
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]

#: Source roots and the package each installs as.
ROOTS = {
    "gridwatch": REPO / "platform" / "gridwatch",
    "gridwatch.workers": REPO / "workers",
    "gridwatch.maps": REPO / "maps",
}
SKIP_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def source_files(root: Path, suffix: str | None = None) -> list[Path]:
    """Files under ``root`` (optionally with ``suffix``), skipping caches and byte code."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not SKIP_PARTS & set(path.relative_to(root).parts)
        and path.suffix != ".pyc"
        and (suffix is None or path.suffix == suffix)
    )


def package_of(directory: Path) -> str:
    """Installed package name of a source directory under one of the three roots."""
    for package, root in sorted(ROOTS.items(), key=lambda item: -len(str(item[1]))):
        if directory == root or root in directory.parents:
            rel = directory.relative_to(root).parts
            return ".".join((package, *rel))
    raise AssertionError(f"{directory} is outside the source roots")


def wheel_name(path: Path) -> str:
    """Path inside the wheel of a source file."""
    return package_of(path.parent).replace(".", "/") + "/" + path.name


# ------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------


def test_platform_is_not_a_package():
    assert (REPO / "platform").is_dir()
    assert not (REPO / "platform" / "__init__.py").exists()


def test_package_dir_mapping():
    assert SETUPTOOLS["package-dir"] == {
        "gridwatch": "platform/gridwatch",
        "gridwatch.workers": "workers",
        "gridwatch.maps": "maps",
    }
    for package, directory in SETUPTOOLS["package-dir"].items():
        assert ROOTS[package] == REPO / directory


def test_every_package_directory_is_listed_and_vice_versa():
    on_disk = {
        package_of(init.parent)
        for root in ROOTS.values()
        for init in source_files(root)
        if init.name == "__init__.py"
    }
    listed = set(SETUPTOOLS["packages"])
    assert sorted(on_disk - listed) == [], "directories with __init__.py missing from packages"
    assert sorted(listed - on_disk) == [], "packages listed without a directory + __init__.py"


def test_no_python_files_outside_packages():
    # A module in a directory without __init__.py would silently be left out of the wheel.
    stray = [
        str(path.relative_to(REPO))
        for root in ROOTS.values()
        for path in source_files(root, ".py")
        if not (path.parent / "__init__.py").exists()
    ]
    assert stray == []


def test_editable_install_maps_the_three_roots():
    for package, root in ROOTS.items():
        module = importlib.import_module(package)
        assert module.__file__ is not None
        assert Path(module.__file__).resolve() == (root / "__init__.py").resolve()


def test_stdlib_platform_is_not_shadowed_from_the_repository_root():
    code = (
        "import uuid, platform, sysconfig, pathlib; platform.system(); uuid.uuid4(); "
        "stdlib = pathlib.Path(sysconfig.get_paths()['stdlib']).resolve(); "
        "assert pathlib.Path(platform.__file__).resolve().parent == stdlib, platform.__file__"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def _bare_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            # `import platform` is the standard library module and fine.
            names = [a.name for a in node.names if a.name.split(".")[0] in ("workers", "maps")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            names = [node.module] if top in ("workers", "maps", "platform") else []
        else:
            continue
        found += [f"{path.relative_to(REPO)}:{node.lineno}: {name}" for name in names]
    return found


def test_no_bare_workers_maps_or_platform_imports():
    checked = [REPO / "platform", REPO / "workers", REPO / "maps", REPO / "tests", REPO / "bench"]
    offenders = [
        hit
        for top in checked
        if top.exists()
        for path in source_files(top, ".py")
        for hit in _bare_imports(path)
    ]
    assert offenders == []


def test_ruff_bans_bare_imports():
    banned = PYPROJECT["tool"]["ruff"]["lint"]["flake8-tidy-imports"]["banned-api"]
    assert {"workers", "maps"} <= set(banned)
    assert "TID" in PYPROJECT["tool"]["ruff"]["lint"]["select"]


# ------------------------------------------------------------------------------------------
# The wheel
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Build a wheel from a copy of the tree (the working tree stays free of build/)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    for name in ("platform", "workers", "maps"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(work)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = work.glob("gridwatch-*.whl")
    return zipfile.ZipFile(built)


@pytest.mark.slow
def test_wheel_contains_every_module(wheel: zipfile.ZipFile):
    names = set(wheel.namelist())
    expected = {wheel_name(p) for root in ROOTS.values() for p in source_files(root, ".py")}
    assert sorted(expected - names) == []
    # Spot checks of the mapping itself.
    assert "gridwatch/workers/__init__.py" in names
    assert "gridwatch/maps/__init__.py" in names
    assert not any(name.startswith(("platform/", "workers/", "maps/")) for name in names)


@pytest.mark.slow
def test_wheel_contains_data_files_and_migrations(wheel: zipfile.ZipFile):
    names = set(wheel.namelist())
    assert {"gridwatch/data/categories.yaml", "gridwatch/data/survey_factors.yaml"} <= names
    assert "gridwatch/storage/migrations/env.py" in names
    assert "gridwatch/storage/migrations/script.py.mako" in names
    migrations = REPO / "platform" / "gridwatch" / "storage" / "migrations" / "versions"
    scripts = [p for p in source_files(migrations, ".py") if re.match(r"\d{4}_", p.name)]
    assert scripts, "no migration scripts found"
    assert {f"gridwatch/storage/migrations/versions/{p.name}" for p in scripts} <= names


@pytest.mark.slow
def test_wheel_leaves_out_no_source_file(wheel: zipfile.ZipFile):
    # Non-Python files (YAML, templates, vendored assets) need package-data to be shipped.
    names = set(wheel.namelist())
    missing = [
        str(path.relative_to(REPO))
        for root in ROOTS.values()
        for path in source_files(root)
        if wheel_name(path) not in names
    ]
    assert missing == [], "add these to [tool.setuptools.package-data]"


@pytest.mark.slow
def test_wheel_metadata(wheel: zipfile.ZipFile):
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    text = wheel.read(metadata).decode("utf-8")
    assert "Name: gridwatch" in text
    assert f"Requires-Python: {PYPROJECT['project']['requires-python']}" in text
    entry_points = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "gridwatch = gridwatch.cli:main" in wheel.read(entry_points).decode("utf-8")
    assert any(n.endswith("LICENSE") for n in wheel.namelist())


# ------------------------------------------------------------------------------------------
# The two README commands and CI
# ------------------------------------------------------------------------------------------


def test_readme_quick_start_has_exactly_two_commands():
    readme = (REPO / "README.md").read_text("utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", quick_start, re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_readme_documents_every_setting():
    config = (REPO / "platform" / "gridwatch" / "config.py").read_text("utf-8")
    readme = (REPO / "README.md").read_text("utf-8")
    variables = set(re.findall(r"GRIDWATCH_[A-Z_]+[A-Z]", config))
    assert len(variables) >= 10
    undocumented = sorted(v for v in variables if f"`{v}`" not in readme)
    assert undocumented == []


def test_ci_runs_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text("utf-8")
    assert script.startswith("#!/usr/bin/env bash") or script.startswith("#!/bin/bash")
    assert "set -euo pipefail" in script
    assert re.search(r"^exec make test$", script, re.M)
    assert (REPO / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"


def test_makefile_targets():
    makefile = (REPO / "Makefile").read_text("utf-8")
    for target in ("demo", "test", "lint", "clean"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert ".venv/.installed" in makefile or "$(VENV)/.installed" in makefile
