"""The query stage: budget, resume, refusal of another oracle, no image paid twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copycat.config import AugmentConfig, PoolConfig, StealConfig
from copycat.errors import OracleError, OracleUnavailableError, StoreMismatchError
from copycat.oracles.base import Answer
from copycat.oracles.local import TorchOracle
from copycat.oracles.outputs import LabelOnly, restrict
from copycat.pools.pool import build_pool
from copycat.steal.loop import steal
from copycat.steal.store import AnswerStore

from .conftest import SHAPE, FailingOracle, RecordingOracle


def _pool(seed: int = 0, spec: str = "noise") -> object:
    return build_pool(PoolConfig(spec=spec, seed=seed), shape=SHAPE)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(budget=st.integers(1, 300), batch=st.integers(1, 97), already=st.integers(0, 2))
def test_budget_is_never_exceeded(
    victim: TorchOracle,
    tmp_path_factory: pytest.TempPathFactory,
    budget: int,
    batch: int,
    already: int,
) -> None:
    path = tmp_path_factory.mktemp("b") / "answers.sqlite"
    oracle = RecordingOracle(LabelOnly(victim))
    with AnswerStore(path) as store:
        for _ in range(already + 1):  # re-running a finished steal sends nothing more
            s = steal(oracle, _pool(), store, config=StealConfig(budget=budget, batch_size=batch))
            assert store.count() == budget
            assert s.answered == budget
    assert len(oracle.queried) == budget
    assert len(set(oracle.queried)) == budget


def test_resume_after_failure_is_exact(victim: TorchOracle, tmp_path: Path) -> None:
    path = tmp_path / "answers.sqlite"
    cfg = StealConfig(budget=500, batch_size=64)
    first = FailingOracle(LabelOnly(victim), fail_after=3)
    with AnswerStore(path) as store, pytest.raises(OracleUnavailableError):
        steal(first, _pool(), store, config=cfg)
    with AnswerStore(path) as store:
        assert store.count() == 3 * 64  # every answered batch was committed
    second = RecordingOracle(LabelOnly(victim))
    with AnswerStore(path) as store:
        s = steal(second, _pool(), store, config=cfg)
        assert store.count() == 500
        data = store.load()
    assert s.already_answered == 3 * 64
    assert not set(first.queried) & set(second.queried)  # nothing paid twice
    assert len(set(first.queried) | set(second.queried)) == 500
    assert len(data) == 500


def test_resuming_against_another_oracle_is_refused(victim: TorchOracle, tmp_path: Path) -> None:
    path = tmp_path / "answers.sqlite"
    with AnswerStore(path) as store:
        steal(LabelOnly(victim), _pool(), store, config=StealConfig(budget=10))
    with AnswerStore(path) as store, pytest.raises(StoreMismatchError, match="new --run-dir"):
        # same weights, other output restriction: another oracle for the fake dataset
        steal(restrict(victim, "probs"), _pool(), store, config=StealConfig(budget=20))


def test_a_steal_resumed_from_another_pool_says_so(
    victim: TorchOracle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store records what the answers were drawn from, sets and shares included; a resume
    that draws from another mix (a changed default, other weights) keeps both and says so."""
    path, even, skewed = (
        tmp_path / "answers.sqlite",
        "npd:sets=strokes,shapes",
        "npd:sets=strokes,shapes;weights=3,1",
    )
    with caplog.at_level("WARNING"), AnswerStore(path) as store:
        steal(LabelOnly(victim), _pool(spec=even), store, config=StealConfig(budget=10))
        steal(LabelOnly(victim), _pool(spec=even), store, config=StealConfig(budget=20))
        assert "drawn from" not in caplog.text  # the same pool: nothing to say
        assert "[strokes 50%, shapes 50%]" in store.meta()["pool"]
        steal(LabelOnly(victim), _pool(spec=skewed), store, config=StealConfig(budget=30))
        assert store.count() == 30 and "[strokes 75%, shapes 25%]" in store.meta()["pool"]
    assert "the 20 answers stored were drawn from npd:sets=strokes,shapes [strokes 50%" in (
        caplog.text
    )
    assert "this run draws from npd:sets=strokes,shapes;weights=3,1 [strokes 75%" in caplog.text
    # a finished store rerun with yet another pool draws nothing: no warning, the record kept
    caplog.clear()
    with caplog.at_level("WARNING"), AnswerStore(path) as store:
        s = steal(LabelOnly(victim), _pool(spec=even), store, config=StealConfig(budget=30))
        assert s.queried_now == 0 and "[strokes 75%, shapes 25%]" in store.meta()["pool"]
    assert "drawn from" not in caplog.text


def test_store_keeps_exact_images_and_probs(victim: TorchOracle, tmp_path: Path) -> None:
    oracle = RecordingOracle(victim)  # probabilities exposed
    with AnswerStore(tmp_path / "a.sqlite") as store:
        steal(oracle, _pool(), store, config=StealConfig(budget=40, batch_size=16))
        data = store.load()
    assert data.images.dtype == torch.uint8 and data.images.shape == (40, *SHAPE)
    assert data.probs is not None
    assert torch.allclose(data.probs.sum(1), torch.ones(40), atol=1e-5)
    again = victim.query(data.images.float() / 255)
    assert torch.equal(again.labels, data.labels)  # the bytes stored are the bytes sent


class _BadOracle(RecordingOracle):
    def query(self, images: torch.Tensor) -> Answer:
        return Answer(labels=torch.full((len(images),), 99))


def test_malformed_answer_is_refused_not_stored(victim: TorchOracle, tmp_path: Path) -> None:
    with AnswerStore(tmp_path / "a.sqlite") as store:
        with pytest.raises(OracleError, match="outside"):
            steal(_BadOracle(victim), _pool(), store, config=StealConfig(budget=8))
        assert store.count() == 0


def test_pool_exhaustion_stops_with_a_reason(
    victim: TorchOracle, tmp_path: Path, png_folder: Path
) -> None:
    cfg = PoolConfig(spec=f"folder:{png_folder}", augment=AugmentConfig(enabled=False))
    pool = build_pool(cfg, shape=SHAPE)
    with AnswerStore(tmp_path / "a.sqlite") as store:
        s = steal(LabelOnly(victim), pool, store, config=StealConfig(budget=1000, batch_size=8))
    assert s.stopped == "pool exhausted"
    assert s.answered == 20  # the 20 readable images, each once
    assert s.skipped_files == {"corrupt": 1, "empty": 1, "not an image": 3}


KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from copycat.config import PoolConfig, StealConfig
    from copycat.oracles.local import TorchOracle
    from copycat.oracles.outputs import LabelOnly
    from copycat.pools.pool import build_pool
    from copycat.steal.loop import steal
    from copycat.steal.store import AnswerStore, image_id

    victim, store_path, log_path = sys.argv[1:4]

    class Logged(LabelOnly):
        def query(self, images):
            ans = super().query(images)
            with open(log_path, "a") as f:  # an answer received is an answer paid
                for img in images.mul(255).round().to(torch.uint8):
                    f.write(image_id(img) + "\\n")
            return ans

    with AnswerStore(store_path) as store:
        steal(Logged(TorchOracle(victim)), build_pool(PoolConfig(spec="noise"), shape=(1, 28, 28)),
              store, config=StealConfig(budget=int(sys.argv[4]), batch_size=8))
""")


def test_kill_9_then_rerun_is_exact(victim_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "steal.py"
    script.write_text(KILL_SCRIPT)
    store_path = tmp_path / "answers.sqlite"
    budget = 4000
    args = [sys.executable, str(script), str(victim_dir), str(store_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, str(tmp_path / "run1.log"), str(budget)], env=env)
    deadline = time.time() + 60
    count = 0
    while time.time() < deadline and count < 200:
        time.sleep(0.05)
        if store_path.exists():
            try:
                with sqlite3.connect(store_path) as c:
                    count = c.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < count < budget, "the steal finished or never started before the kill"
    with sqlite3.connect(store_path) as c:
        committed_first = {r[0] for r in c.execute("SELECT id FROM answers")}
    subprocess.run(
        [*args, str(tmp_path / "run2.log"), str(budget)], env=env, check=True, timeout=120
    )
    with sqlite3.connect(store_path) as c:
        ids = [r[0] for r in c.execute("SELECT id FROM answers")]
    run1 = (tmp_path / "run1.log").read_text().split()
    run2 = (tmp_path / "run2.log").read_text().split()
    assert len(ids) == budget == len(set(ids))
    assert committed_first <= set(ids)  # no committed answer lost
    assert not committed_first & set(run2), "an answered image was queried again"
    # only the batch in flight at the kill may have been answered but not yet committed
    assert len(set(run1) - committed_first) <= 8
