"""HTTP oracles against real ``copycat serve`` processes on 127.0.0.1, with injected faults."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from copycat.config import AugmentConfig, PoolConfig, StealConfig
from copycat.errors import ConfigError, OracleError, OracleUnavailableError
from copycat.oracles.http import build_http_oracle
from copycat.oracles.http.formats import load_label_map, parse_plain_reply
from copycat.oracles.http.oip import uint8_json
from copycat.oracles.local import TorchOracle
from copycat.oracles.registry import parse_oracle_spec
from copycat.pools.pool import build_pool
from copycat.steal.loop import steal
from copycat.steal.store import AnswerStore, image_id

from .http_support import Server, env_with_src, running_server, tiny_target

FAST = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 2.0}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_target(tmp_path_factory.mktemp("target"))


@pytest.fixture(scope="module")
def flaky(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, its fault plan replaced by each test (none by default)."""
    args = ("--output", "probs", "--faults", "{}")
    with running_server(target, tmp_path_factory.mktemp("srv"), *args) as s:
        yield s


@pytest.fixture
def plain(flaky: Server) -> Server:
    _faults(flaky)
    return flaky


def _faults(server: Server, **plan: Any) -> None:
    r = httpx.put(server.url + "/_faults", content=json.dumps(plan))
    assert r.status_code == 200, r.text


def _pool(seed: int = 0) -> Any:
    cfg = PoolConfig(spec="noise", seed=seed, augment=AugmentConfig(enabled=False))
    return build_pool(cfg, shape=(1, 28, 28))


def _assert_store_matches_target(path: Path, target: Path, budget: int) -> None:
    """Exactly ``budget`` unique answers, each the target's own label for the stored image."""
    with AnswerStore(path) as store:
        data = store.load()
        assert store.count() == budget
    ids = [image_id(img) for img in data.images]
    assert len(set(ids)) == budget
    want = TorchOracle(target).query(data.images.float() / 255).labels
    assert torch.equal(data.labels, want)


def test_oip_and_plain_json_oracles_agree_with_the_local_target(
    plain: Server, target: Path
) -> None:
    x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8).float() / 255
    want = TorchOracle(target).query(x)
    for send_as in ("auto", "fp32", "png"):
        o = parse_oracle_spec(
            f"oip+{plain.url}/v2/models/quad", output="probs", send_as=send_as, request_batch=16
        )
        got = o.query(x)
        assert torch.equal(got.labels, want.labels) and got.probs is not None
        assert torch.allclose(got.probs, want.probs, atol=1e-5)
        assert o.num_classes == 4 and o.input_shape == (1, 28, 28)
    pj = parse_oracle_spec(
        f"{plain.url}/predict",
        output="probs",
        label_map='["tl", "tr", "bl", "br"]',
        input_shape="1,28,28",
        request_batch=7,
        price_per_1000=2.0,
    )
    got = pj.query(x)
    assert torch.equal(got.labels, want.labels)
    assert pj.ledger.as_dict()["queries"] == 40  # type: ignore[attr-defined]
    assert pj.ledger.as_dict()["estimated_cost"] == pytest.approx(0.08)  # type: ignore[attr-defined]
    assert pj.fingerprint.startswith("http:") and o.fingerprint.startswith("oip:")


def test_steal_completes_through_every_fault_with_exactly_budget_answers(
    flaky: Server, target: Path, tmp_path: Path
) -> None:
    faults = {
        "seed": 3,
        "error500": 0.08,
        "error429": 0.08,
        "retry_after": 0.2,
        "slow": 0.04,
        "slow_seconds": 3.0,
        "malformed": 0.08,
        "drop": 0.08,
        "sequence": ["drop", "malformed", "error429", "error500", "slow"],
    }
    _faults(flaky, **faults)
    before = flaky.served_images()
    try:
        oracle = parse_oracle_spec(
            f"oip+{flaky.url}/v2/models/quad",
            output="label",
            concurrency=4,
            request_batch=8,
            max_retries=12,
            price_per_1000=1.0,
            **{**FAST, "timeout": 1.0},
        )
        budget = 240
        with AnswerStore(tmp_path / "answers.sqlite") as store:
            summary = steal(
                oracle, _pool(), store, config=StealConfig(budget=budget, batch_size=64)
            )
        served = flaky.served_images() - before
    finally:
        _faults(flaky)
    assert summary.answered == budget
    _assert_store_matches_target(tmp_path / "answers.sqlite", target, budget)
    led = oracle.ledger.as_dict()  # type: ignore[attr-defined]
    assert led["queries"] == budget and led["requests"] == budget // 8
    assert led["retries"] >= 5 and led["failures"] == led["retries"]
    assert led["attempts"] == led["requests"] + led["failures"] + 2  # + model, server metadata
    # Billed: every 2xx reply (malformed ones too); served: slow replies the client gave up on.
    assert led["billed_images"] >= budget and served >= budget


def test_retry_after_is_honoured(flaky: Server) -> None:
    o = build_http_oracle(f"oip+{flaky.url}/v2/models/quad", **FAST)
    o.input_shape  # noqa: B018  # metadata first, so only the query is timed
    _faults(flaky, sequence=["error429"], retry_after=1.0)
    t0 = time.monotonic()
    o.query(torch.rand(3, 1, 28, 28))
    assert time.monotonic() - t0 >= 1.0
    assert o.ledger.retries == 1


def test_exhausted_retries_keep_paid_answers_and_name_the_cause(
    flaky: Server, tmp_path: Path
) -> None:
    _faults(flaky, sequence=["ok"], error500=1.0)
    try:
        o = build_http_oracle(
            f"oip+{flaky.url}/v2/models/quad", concurrency=1, request_batch=8, max_retries=2, **FAST
        )
        with AnswerStore(tmp_path / "a.sqlite") as store:
            with pytest.raises(OracleUnavailableError, match=r"HTTP 500.*--max-retries") as err:
                steal(o, _pool(), store, config=StealConfig(budget=64, batch_size=32))
            assert store.count() == 8  # the first request was answered, and is committed
        assert err.value.answered is not None and len(err.value.answered) == 8
        assert o.ledger.attempts == 2 + 1 + 3 * 3  # metadata x2, the good one, 3 tries x 3
    finally:
        _faults(flaky)


def test_wrong_key_and_oversized_requests_fail_fast_with_the_fix(
    target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("SRV_KEY", "right-key")
    monkeypatch.setenv("CLIENT_KEY", "wrong-key")
    args = ("--api-key-env", "SRV_KEY", "--max-batch", "4")
    with running_server(target, tmp_path, *args, env=env_with_src()) as s:
        spec = f"oip+{s.url}/v2/models/quad"
        with pytest.raises(OracleError, match=r"HTTP 401.*CLIENT_KEY"):
            build_http_oracle(spec, api_key_env="CLIENT_KEY", **FAST).input_shape  # noqa: B018
        monkeypatch.setenv("CLIENT_KEY", "right-key")
        caplog.set_level(logging.DEBUG)
        o = build_http_oracle(spec, api_key_env="CLIENT_KEY", request_batch=8, **FAST)
        with pytest.raises(OracleError, match="--request-batch"):
            o.query(torch.rand(8, 1, 28, 28))
        assert o.ledger.retries == 0
        ok = build_http_oracle(spec, api_key_env="CLIENT_KEY", request_batch=4, **FAST)
        assert len(ok.query(torch.rand(8, 1, 28, 28)).labels) == 8
        assert "right-key" not in ok.fingerprint and "right-key" not in caplog.text
    with pytest.raises(ConfigError, match="UNSET_VAR"):
        build_http_oracle(spec, api_key_env="UNSET_VAR").query(torch.rand(1, 1, 28, 28))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_cli_steal_resumes_without_paying_twice(
    flaky: Server, target: Path, tmp_path: Path
) -> None:
    # slow answers (0.2 s each, 50 requests) keep the steal running for seconds after the
    # first 100 images even on loaded cores, so the interrupt lands mid-steal
    _faults(flaky, delay=0.2)
    s = flaky
    base = s.served_images()
    try:
        cmd = [sys.executable, "-m", "copycat.cli", "steal", "--oracle"]
        cmd += [f"oip+{s.url}/v2/models/quad", "--run-dir", str(tmp_path / "run")]
        cmd += ["--pool", "noise", "--no-augment", "--budget", "400", "--batch-size", "64"]
        cmd += ["--request-batch", "8", "--concurrency", "2", "--device", "cpu"]
        # the child must see ^C as a user's terminal would: a SIGINT the test process
        # inherited as ignored would be ignored by the child too (Python keeps SIG_IGN)
        inherited = signal.getsignal(signal.SIGINT)
        first = subprocess.Popen(
            cmd, env=env_with_src(), stderr=subprocess.PIPE, preexec_fn=_default_sigint
        )
        while s.served_images() - base < 100 and first.poll() is None:
            time.sleep(0.02)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 130, f"SIGINT here: {inherited}\n" + err.decode()[-2000:]
        with AnswerStore(tmp_path / "run" / "answers.sqlite") as store:
            kept = store.count()
        assert 0 < kept < 400
        assert s.served_images() - base == kept  # everything the server answered was committed
        done = subprocess.run(cmd, env=env_with_src(), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert s.served_images() - base == 400  # no image was paid for twice
    finally:
        _faults(flaky)
    _assert_store_matches_target(tmp_path / "run" / "answers.sqlite", target, 400)
    report = json.loads((tmp_path / "run" / "steal.json").read_text())
    assert report["queries"] == 400 - kept and report["attempts"] >= report["requests"]
    # the ledger of the interrupted run was kept: together the runs paid for 400 images
    assert report["total"]["queries"] == 400
    assert report["total"]["billed_images"] == 400


@pytest.mark.parametrize(
    ("fmt", "body", "labels", "has_probs"),
    [
        ("label-score", [[{"label": "b", "score": 0.7}, {"label": "a", "score": 0.3}]], [1], True),
        ("label-score", [{"label": "c", "score": 0.9}], [2], True),  # one image, HF style
        ("label-score", [[{"label": "a"}], [{"label": 2}]], [0, 2], False),
        ("label", ["c", {"label": "a"}], [2, 0], False),
        ("probs", [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], [2, 0], True),
    ],
)
def test_plain_reply_formats(fmt: str, body: Any, labels: list[int], has_probs: bool) -> None:
    index = {"a": 0, "b": 1, "c": 2}
    ans = parse_plain_reply(body, n=len(labels), fmt=fmt, num_classes=3, index=index)
    assert ans.labels.tolist() == labels
    assert (ans.probs is not None) == has_probs
    if ans.probs is not None:
        assert torch.allclose(ans.probs.sum(1), torch.ones(len(labels)))


def test_plain_reply_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(OracleError, match="label-map"):
        parse_plain_reply([{"label": "zebra"}], n=1, fmt="label", num_classes=3, index={"a": 0})
    with pytest.raises(OracleError, match="one entry per image"):
        parse_plain_reply({"x": 1}, n=2, fmt="label", num_classes=3, index={})
    f = tmp_path / "labels.txt"
    f.write_text("cat\ndog\n")
    assert load_label_map(str(f)) == ("cat", "dog")
    assert load_label_map('{"dog": 1, "cat": 0}') == ("cat", "dog")
    with pytest.raises(ConfigError, match="input-shape"):
        build_http_oracle("http://127.0.0.1:1/predict").input_shape  # noqa: B018
    with pytest.raises(ConfigError, match="concurrency"):
        build_http_oracle("http://127.0.0.1:1/predict", concurrency=0)
    with pytest.raises(ConfigError, match="/v2/models/NAME"):
        build_http_oracle("oip+http://127.0.0.1:1/predict")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=300))
def test_uint8_json_is_exact_json(values: list[int]) -> None:
    assert json.loads(uint8_json(np.asarray(values, dtype=np.uint8))) == values
