"""`make run` installs only when pyproject.toml changed, and without the test extras (dry runs of the real Makefile)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return tmp_path


def dry_run(project: Path, target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=project, capture_output=True, text=True, check=True).stdout


def touch_later(path: Path, than: Path) -> None:
    later = than.stat().st_mtime + 5
    path.touch()
    os.utime(path, (later, later))


def test_make_run_installs_once_without_test_extras_and_again_only_after_pyproject_changes(project):
    first = dry_run(project, "run")
    assert "pip install --quiet -e ." in first and "[test]" not in first and "-m bot" in first

    (project / ".venv" / ".installed").touch()
    touch_later(project / ".venv" / ".installed", than=project / "pyproject.toml")
    again = dry_run(project, "run")
    assert "pip install" not in again and "-m bot" in again

    time.sleep(0.01)
    touch_later(project / "pyproject.toml", than=project / ".venv" / ".installed")
    assert "pip install --quiet -e ." in dry_run(project, "run")


def test_make_test_installs_the_test_extras(project):
    assert 'pip install --quiet -e ".[test]"' in dry_run(project, "test")


def test_make_lint_runs_ruff_and_mypy_from_the_test_extras(project):
    lint = dry_run(project, "lint")
    assert 'pip install --quiet -e ".[test]"' in lint
    assert "ruff check ." in lint and "ruff format --check ." in lint and "mypy" in lint
