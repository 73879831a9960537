"""Exact accounting and durable runs of the steal stage, against real servers on 127.0.0.1.

Each test reproduces one way money could be spent without being counted (or counted without
being kept): duplicates within a batch, a ``kill -9`` with requests in flight, retries past a
cap, two processes on one run directory, undecodable replies, torn files and leaked secrets.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from copycat.config import AugmentConfig, PoolConfig, StealConfig
from copycat.errors import CopycatError, OracleError, RunLockedError
from copycat.oracles.http import build_http_oracle
from copycat.pools.pool import build_pool
from copycat.redact import redact_text, redact_url
from copycat.runs import RunDir
from copycat.steal.loop import steal
from copycat.steal.store import AnswerStore, LimitReached

from .http_support import Server, env_with_src, running_server, tiny_target

FAST = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 2.0}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_target(tmp_path_factory.mktemp("target"))


@pytest.fixture(scope="module")
def server(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with fault injection, its plan replaced by each test (none by default)."""
    srv = tmp_path_factory.mktemp("srv")
    with running_server(target, srv, "--faults", "{}", env=env_with_src()) as s:
        yield s


def _faults(server: Server, **plan: Any) -> None:
    r = httpx.put(server.url + "/_faults", content=json.dumps(plan))
    assert r.status_code == 200, r.text


def _folder(root: Path, n: int = 20) -> Path:
    rng = np.random.default_rng(7)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _noise(seed: int = 0) -> Any:
    cfg = PoolConfig(spec="noise", seed=seed, augment=AugmentConfig(enabled=False))
    return build_pool(cfg, shape=(1, 28, 28))


def _steal_cmd(server: Server, run: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "copycat.cli", "steal", "--oracle"]
    cmd += [f"oip+{server.url}/v2/models/quad", "--run-dir", str(run), "--device", "cpu"]
    cmd += ["--pool", "noise", "--no-augment", "--selection", "random", *extra]
    return cmd


# -- defect 1: repeats within one batch ------------------------------------------------------
def test_repeats_within_a_batch_are_sent_once(server: Server, tmp_path: Path) -> None:
    _faults(server)
    pool_cfg = PoolConfig(
        spec=f"folder:{_folder(tmp_path / 'pool')}", augment=AugmentConfig(enabled=False)
    )
    oracle = build_http_oracle(f"oip+{server.url}/v2/models/quad", request_batch=16, **FAST)
    before = server.served_images()
    with AnswerStore(tmp_path / "a.sqlite") as store:
        s = steal(
            oracle,
            build_pool(pool_cfg, shape=(1, 28, 28)),
            store,
            config=StealConfig(budget=100, selection="random"),
        )
        totals = store.ledger_totals()
    assert s.answered == 20 and s.stopped == "pool exhausted"
    assert server.served_images() - before == 20  # not 100: each distinct image paid once
    assert totals["billed_images"] == 20 == totals["answered"]


# -- defect 2: kill -9 with requests in flight -----------------------------------------------
def _count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute(sql).fetchone()[0] or 0)


def test_kill_9_loses_at_most_the_requests_in_flight(server: Server, tmp_path: Path) -> None:
    _faults(server, delay=0.05)
    base = server.served_images()
    run = tmp_path / "run"
    cmd = _steal_cmd(server, run, "--budget", "400", "--batch-size", "64")
    cmd += ["--request-batch", "8", "--concurrency", "4"]
    try:
        first = subprocess.Popen(cmd, env=env_with_src(), stderr=subprocess.DEVNULL)
        while server.served_images() - base < 120 and first.poll() is None:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        time.sleep(0.5)  # the server finishes (and logs) what was in flight
        store = run / "answers.sqlite"
        kept = _count(store, "SELECT COUNT(*) FROM answers")
        in_flight = _count(store, "SELECT SUM(images) FROM requests WHERE outcome IS NULL")
        served_first = server.served_images() - base
        assert in_flight <= 4 * 8  # at most --concurrency requests were open
        assert 0 < kept < 400 and served_first - kept <= in_flight  # per-request commits
        done = subprocess.run(cmd, env=env_with_src(), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    finally:
        _faults(server)
    served = server.served_images() - base
    assert _count(store, "SELECT COUNT(*) FROM answers") == 400
    assert served - 400 <= in_flight  # re-paid: at most the images in flight at the kill
    report = json.loads((run / "steal.json").read_text())
    # the ledger counts every billed image, the re-paid ones included, across the kill
    assert served <= report["total"]["billed_images"] <= served + in_flight
    assert report["total"]["answered"] == 400


# -- defect 3: retries bill extra images; --max-billed ---------------------------------------
def test_max_billed_caps_images_sent_with_retries_over_all_runs(
    server: Server, tmp_path: Path
) -> None:
    # two malformed 200 replies: billed, retried, billed again
    _faults(server, sequence=["malformed", "malformed"])
    base = server.served_images()
    oracle = build_http_oracle(
        f"oip+{server.url}/v2/models/quad", request_batch=8, concurrency=1, **FAST
    )
    cfg = StealConfig(budget=64, batch_size=32, selection="random", max_billed=40)
    try:
        with AnswerStore(tmp_path / "a.sqlite") as store:
            s = steal(oracle, _noise(), store, config=cfg)
            again = steal(oracle, _noise(), store, config=cfg)  # a resume pays nothing more
            totals = store.ledger_totals()
    finally:
        _faults(server)
    assert s.stopped == again.stopped == "max-billed reached"
    assert totals["billed_images"] == 40 and totals["answered"] == 24
    assert server.served_images() - base <= 40
    with pytest.raises(ValueError, match="max_billed"):
        StealConfig(max_billed=0)


def test_cli_reports_billed_and_answered(server: Server, tmp_path: Path) -> None:
    _faults(server, sequence=["malformed"])
    run = tmp_path / "run"
    cmd = _steal_cmd(server, run, "--budget", "32", "--request-batch", "8", "--max-retries", "2")
    cmd += ["--max-billed", "1000"]
    try:
        done = subprocess.run(cmd, env=env_with_src(), capture_output=True, timeout=120)
    finally:
        _faults(server)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    out = done.stdout.decode()
    assert "billed (all runs)" in out and "answered (all runs)" in out
    st = json.loads((run / "steal.json").read_text())
    assert st["total"]["answered"] == 32 and st["total"]["billed_images"] == 40
    assert json.loads((run / "config.json").read_text())["steal"]["steal"]["max_billed"] == 1000


# -- defect 4: two processes on one run directory --------------------------------------------
def test_a_second_steal_on_a_locked_run_dir_is_refused(server: Server, tmp_path: Path) -> None:
    run = RunDir.at(tmp_path / "run")
    with run.lock("steal"):
        done = subprocess.run(
            _steal_cmd(server, run.root, "--budget", "8"),
            env=env_with_src(),
            capture_output=True,
            timeout=120,
        )
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"), run.lock("steal"):
            pass
    assert done.returncode == 2
    err = done.stderr.decode()
    assert f"pid {os.getpid()}" in err and "in use" in err
    with run.lock("steal"):  # released: free again
        pass


def test_the_budget_is_rechecked_inside_the_write_transaction(tmp_path: Path) -> None:
    with AnswerStore(tmp_path / "a.sqlite") as a, AnswerStore(tmp_path / "a.sqlite") as b:
        a.open_request(["x"] * 6, attempt=0, budget=10, max_billed=None)
        # another connection (another process) sees the 6 in flight: only 4 more fit
        with pytest.raises(LimitReached, match="budget"):
            b.open_request(["y"] * 5, attempt=0, budget=10, max_billed=None)
        b.open_request(["y"] * 4, attempt=0, budget=10, max_billed=10)
        with pytest.raises(LimitReached, match="max-billed"):
            b.open_request(["z"], attempt=0, budget=None, max_billed=10)
        assert a.ledger_totals()["in_flight_images"] == 10


# -- defect 5: undecodable reply bodies ------------------------------------------------------
class _GzipHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = gzip.compress(b'{"labels": [0]}' * 10)  # gzip bytes without the header
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gzip_server() -> Iterator[str]:
    """A stdlib server on 127.0.0.1 whose 200 replies are gzip bytes sent as JSON."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _GzipHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_undecodable_reply_is_retried_then_a_clear_error(gzip_server: str) -> None:
    o = build_http_oracle(
        f"{gzip_server}/predict", input_shape="1,28,28", num_classes=4, max_retries=2, **FAST
    )
    with pytest.raises(OracleError, match="malformed reply"):
        o.query(torch.rand(2, 1, 28, 28))
    assert o.ledger.attempts == 3 and o.ledger.retries == 2


# -- defect 6: torn run-directory files ------------------------------------------------------
def test_a_truncated_config_json_names_the_fix(tmp_path: Path) -> None:
    run = RunDir.at(tmp_path)
    run.record("steal", {"budget": 10})
    assert not [p for p in tmp_path.iterdir() if p.name != "config.json"]  # no temp file left
    (tmp_path / "config.json").write_text('{"version": "0.1", "steal": {"bud')
    with pytest.raises(CopycatError, match=r"config\.json.*(delete|move)"):
        run.record("train", {"epochs": 1})
    with pytest.raises(CopycatError, match=r"config\.json"):
        run.read_config()


# -- secrets ---------------------------------------------------------------------------------
def test_credentials_in_urls_are_redacted_everywhere(
    tmp_path: Path,
    gzip_server: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://alice:hunter2@api.example.com/v1/predict?model=m&api_key=SECRET1&token=S2"
    assert redact_url(url) == (
        "https://***@api.example.com/v1/predict?model=m&api_key=***&token=***"
    )
    assert "SECRET1" not in redact_text(f"copycat steal --oracle {url} --budget 3")
    plain = "oip+http://127.0.0.1:8080/v2/models/m?x=a%20b&y=1"
    assert redact_text(f"--oracle {plain} -v") == f"--oracle {plain} -v"  # untouched
    run = RunDir.at(tmp_path)
    run.record("steal", {"oracle": url}, f"copycat steal --oracle {url}")
    text = (tmp_path / "config.json").read_text()
    assert "hunter2" not in text and "SECRET1" not in text and "S2" not in text
    # the fingerprint and error messages of the oracle hold no secret either
    caplog.set_level(logging.INFO)  # httpx logs each request's URL at INFO
    host = gzip_server.removeprefix("http://")
    o = build_http_oracle(
        f"http://u:pw@{host}/predict?key=SECRET3",
        input_shape="1,28,28",
        num_classes=4,
        max_retries=0,
        **FAST,
    )
    with pytest.raises(OracleError) as err:
        o.query(torch.rand(1, 1, 28, 28))
    assert "SECRET3" not in str(err.value) + caplog.text and ":pw@" not in caplog.text
    assert "key=***" in caplog.text  # the request was logged, redacted
    assert "SECRET3" not in o.fingerprint
    caplog.clear()
    monkeypatch.setenv("ACCT_TEST_KEY", "k")
    remote = build_http_oracle("http://10.0.0.1:9/predict", api_key_env="ACCT_TEST_KEY")
    remote.transport.client  # noqa: B018  # the client is made: the warning is given
    local = build_http_oracle("http://127.0.0.1:9/predict", api_key_env="ACCT_TEST_KEY")
    local.transport.client  # noqa: B018
    warned = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warned) == 1 and "10.0.0.1" in warned[0].getMessage()


def test_max_cost_sets_the_billed_cap() -> None:
    from copycat.cli.stages import billed_cap

    assert billed_cap(None, 3.0, 1.5) == 2000
    assert billed_cap(500, 3.0, 1.5) == 500
    assert billed_cap(None, None, 0.0) is None
    with pytest.raises(CopycatError, match="price-per-1000"):
        billed_cap(None, 3.0, 0.0)


def test_a_store_from_before_the_ledger_counts_its_answers_billed_once(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    with sqlite3.connect(path) as c:  # the schema of earlier versions: answers, no requests
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        c.execute(
            "CREATE TABLE answers (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
            "UNIQUE, image BLOB NOT NULL, label INTEGER NOT NULL, probs BLOB, source TEXT NOT "
            "NULL, queried_at REAL NOT NULL)"
        )
        c.executemany(
            "INSERT INTO answers (id, image, label, source, queried_at) VALUES (?, ?, 0, 's', 0)",
            [(f"id{i}", b"x") for i in range(5)],
        )
    with AnswerStore(path) as store:
        totals = store.ledger_totals()
    assert totals["answered"] == totals["billed_images"] == 5 and totals["repaid_images"] == 0
