"""Benchmark scripts fail fast: a missing optional dependency is named, with the command that
installs it, before any target is trained or any pool is built."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .http_support import env_with_src

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"

# ``sys.modules["art"] = None`` makes ART missing in the child whether or not it is installed.
WITHOUT_ART = """
import runpy, sys
sys.modules["art"] = None
sys.argv = [sys.argv[1], "--quick", "--work", sys.argv[2]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_peers_names_the_missing_art_before_any_work(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", WITHOUT_ART, str(PEERS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_with_src(COPYCAT_BENCH_CACHE=str(tmp_path / "cache")),
    )
    assert res.returncode != 0
    assert "pip install adversarial-robustness-toolbox" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "cache").exists() and not any(tmp_path.glob("peers/*"))
    assert time.perf_counter() - t0 < 60


def test_paper_table_ablates_the_default_selection() -> None:
    """The grid compares the default selection with random and label-aware picks (its check
    for the selection module once named a path that no longer existed, and dropped the row)."""
    import runpy

    from copycat.config import StealConfig

    script = PEERS.parent / "paper_table.py"
    grid = runpy.run_path(str(script), run_name="paper_table")["grid_cases"](500)
    rows = {label: changes for label, changes in grid}
    others = {"random", "balanced"} - {StealConfig().selection}
    assert others and all(rows[f"NPD, {o} selection"]["steal"]["selection"] == o for o in others)


def test_suite_copycat_set_is_checked_before_any_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--copycat-set`` values are read as TOML and coerced to TrainConfig's types; a typo
    stops the run at once, naming the accepted keys."""
    import runpy

    parse = runpy.run_path(str(PEERS.parent / "suite.py"), run_name="suite")["parse_args"]
    args = parse(["--copycat-set", "val_fraction=0", "--copycat-set", "arch=cnn-wide"])
    assert args.copycat_set == {"val_fraction": 0.0, "arch": "cnn-wide"}
    assert isinstance(args.copycat_set["val_fraction"], float)
    for bad, says in (
        ("val_fractio=0", "accepted: ['arch'"),
        ("epochs=ten", "accepted: an integer"),
        ("epochs", "expected KEY=VALUE"),
    ):
        with pytest.raises(SystemExit):
            parse(["--copycat-set", bad])
        assert says in capsys.readouterr().err


def _suite_results(path: Path, sha: str, command: str, rows: list[tuple[str, int, float]]) -> Path:
    """A results file as benchmarks/suite.py writes it: (method, seed, performance) at 2,000."""
    import json

    results = [
        {
            "target": "digits",
            "method": method,
            "seed": seed,
            "points": [{"answers": 2000, "performance_accuracy": perf, "agreement": perf}],
        }
        for method, seed, perf in rows
    ]
    data = {"command": command, "targets": {"digits": {"weights_sha256": sha}}, "results": results}
    path.write_text(json.dumps(data))
    return path


def test_compare_sets_methods_against_a_base_seed_by_seed_on_one_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Changes are per seed, a run's training options name its rows, and results of another
    target build or the same case twice are refused with what to do."""
    import runpy

    main = runpy.run_path(str(PEERS.parent / "compare.py"), run_name="compare")["main"]
    plain = "python benchmarks/suite.py --targets digits --budgets 2k"
    base = _suite_results(
        tmp_path / "a.json", "ab" * 32, plain, [("jacobian", 0, 0.80), ("jacobian", 1, 0.70)]
    )
    other = _suite_results(
        tmp_path / "b.json",
        "ab" * 32,
        plain + " --copycat-min-steps 1400",
        [("strokes", 0, 0.90), ("strokes", 1, 0.65)],
    )
    main([str(base), str(other), "--base", "jacobian"])
    out = capsys.readouterr().out
    assert "| digits | 2,000 | strokes (min_steps 1400) | 0.775 [0.650-0.900] | 0, 1 |" in out
    assert "+0.100, -0.050 |" in out
    rebuilt = _suite_results(tmp_path / "c.json", "cd" * 32, plain, [("strokes", 0, 0.9)])
    for files, says in (
        ([base, rebuilt], "compare results of one build"),
        ([base, base], "is in two of the files"),
        ([base], "--base random: no results of it"),
    ):
        with pytest.raises(SystemExit, match=says):
            main([*map(str, files), "--base", "random" if len(files) == 1 else "jacobian"])


def test_arch_choice_names_what_it_needs(tmp_path: Path) -> None:
    import runpy

    main = runpy.run_path(str(PEERS.parent / "arch_choice.py"), run_name="arch_choice")["main"]
    with pytest.raises(SystemExit, match=r"no answers\.sqlite; give run directories of steals"):
        main([str(tmp_path)])
