"""``make clean`` never deletes paid answers; ``make clean-runs`` needs ``CONFIRM=1``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def _make(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-f", str(MAKEFILE), *args], cwd=cwd, capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_clean_keeps_runs_and_clean_runs_needs_confirm(tmp_path: Path) -> None:
    answers = tmp_path / "runs" / "demo" / "answers.sqlite"
    answers.parent.mkdir(parents=True)
    answers.write_bytes(b"paid")
    (tmp_path / ".pytest_cache").mkdir()
    assert _make(tmp_path, "clean").returncode == 0
    assert answers.is_file() and not (tmp_path / ".pytest_cache").exists()
    refused = _make(tmp_path, "clean-runs")
    assert refused.returncode != 0 and "CONFIRM=1" in refused.stdout
    assert answers.is_file()
    assert _make(tmp_path, "clean-runs", "CONFIRM=1").returncode == 0
    assert not answers.parent.exists()
