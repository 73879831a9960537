"""``copycat serve`` under uvicorn on 127.0.0.1: protocol, limits, key, rate limit, query log."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from copycat.errors import ConfigError
from copycat.oracles.local import TorchOracle
from copycat.serve.faults import FaultPlan

from .http_support import Server, env_with_src, running_server, synthetic_set, tiny_target

KEY = "s3cret-test-key"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_target(tmp_path_factory.mktemp("target"))


@pytest.fixture(scope="module")
def keyed(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--api-key-env", "TEST_KEY", "--max-batch", "8", "--max-body-mb", "0.25"]
    args += ["--output", "probs"]
    env = env_with_src(TEST_KEY=KEY)
    with running_server(target, tmp_path_factory.mktemp("keyed"), *args, env=env) as s:
        yield s


def _images(n: int) -> np.ndarray:
    return synthetic_set(n, seed=5).images.numpy()


def _infer_body(x: np.ndarray) -> dict[str, object]:
    tensor = {"name": "images", "shape": list(x.shape), "datatype": "UINT8"}
    return {"inputs": [{**tensor, "data": x.ravel().tolist()}]}


def _png(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(a[0], "L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_health_and_metadata_follow_the_open_inference_protocol(keyed: Server) -> None:
    h = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(keyed.url + "/v2/health/live").json() == {"live": True}
    assert httpx.get(keyed.url + "/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(keyed.url + "/v2/models/quad", headers=h).json()
    assert meta["name"] == "quad"  # the folder's name
    assert meta["inputs"][0]["shape"] == [-1, 1, 28, 28]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probs"}
    assert httpx.get(keyed.url + "/v2/models/quad/ready", headers=h).json()["ready"] is True
    r = httpx.get(keyed.url + "/v2/models/other", headers=h)
    assert r.status_code == 404 and "quad" in r.json()["error"]


def test_api_key_is_required_and_checked(keyed: Server) -> None:
    body = _infer_body(_images(2))
    url = keyed.url + "/v2/models/quad/infer"
    assert httpx.post(url, json=body).status_code == 401
    r = httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert httpx.get(keyed.url + "/v2/models/quad").status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}).is_success
    assert httpx.post(url, json=body, headers={"X-API-Key": KEY}).is_success
    assert KEY not in keyed.log.read_text()


def test_oversized_batch_and_body_get_413(keyed: Server) -> None:
    h = {"X-API-Key": KEY}
    url = keyed.url + "/v2/models/quad/infer"
    r = httpx.post(url, json=_infer_body(_images(9)), headers=h)
    assert r.status_code == 413 and "limit of 8" in r.json()["error"]
    big = json.dumps(_infer_body(_images(8))).encode() + b" " * 300_000
    r = httpx.post(url, content=big, headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "malformed request"),
        (b'{"inputs": [{"name": "images"}]}', "shape"),
        (
            b'{"inputs": [{"name": "i", "shape": [1, 3, 2, 2], "datatype": "UINT8", "data": []}]}',
            "expected [N, 1, H, W]",
        ),
        (
            b'{"inputs": [{"name": "i", "shape": [1, 1, 2, 2], "datatype": "UINT8", '
            b'"data": [1, 2, 3]}]}',
            "needs 4",
        ),
        (
            b'{"inputs": [{"name": "i", "shape": [1, 1, 1, 2], "datatype": "UINT8", '
            b'"data": [1, 999]}]}',
            "0..255",
        ),
        (
            b'{"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": ["@@"]}]}',
            "base64",
        ),
        (
            b'{"inputs": [{"name": "i", "shape": [1, 1, 1, 1], "datatype": "INT8", "data": [1]}]}',
            "UINT8, FP32 or BYTES",
        ),
    ],
)
def test_malformed_requests_get_400_saying_what_is_wrong(
    keyed: Server, body: bytes, says: str
) -> None:
    h = {"X-API-Key": KEY, "Content-Type": "application/json"}
    r = httpx.post(keyed.url + "/v2/models/quad/infer", content=body, headers=h)
    assert r.status_code == 400
    assert says in r.json()["error"]


def test_uint8_fp32_and_png_inputs_give_the_local_answer(keyed: Server, target: Path) -> None:
    x = _images(6)
    h = {"X-API-Key": KEY}
    url = keyed.url + "/v2/models/quad/infer"
    want = TorchOracle(target).query(__import__("torch").from_numpy(x).float() / 255)
    r8 = httpx.post(url, json={**_infer_body(x), "id": "a1"}, headers=h).json()
    assert r8["id"] == "a1" and r8["model_name"] == "quad"
    labels = {o["name"]: o for o in r8["outputs"]}["label"]["data"]
    assert labels == want.labels.tolist()
    fp = {"name": "images", "shape": list(x.shape), "datatype": "FP32"}
    fp["data"] = (x.astype(np.float64) / 255).ravel().tolist()
    r32 = httpx.post(url, json={"inputs": [fp]}, headers=h).json()
    probs = np.asarray({o["name"]: o for o in r32["outputs"]}["probs"]["data"]).reshape(6, 4)
    assert np.allclose(probs, want.probs.numpy(), atol=1e-5)
    png = {"name": "images", "shape": [6], "datatype": "BYTES", "data": [_png(a) for a in x]}
    rp = httpx.post(url, json={"inputs": [png], "outputs": [{"name": "label"}]}, headers=h)
    assert [o["name"] for o in rp.json()["outputs"]] == ["label"]
    assert rp.json()["outputs"][0]["data"] == want.labels.tolist()


def test_predict_returns_label_score_lists(keyed: Server, target: Path) -> None:
    x = _images(3)
    h = {"X-API-Key": KEY}
    rows = httpx.post(keyed.url + "/predict", json={"images": [_png(a) for a in x]}, headers=h)
    assert rows.status_code == 200
    names = TorchOracle(target).card.class_names
    for row in rows.json():
        assert [e["score"] for e in row] == sorted((e["score"] for e in row), reverse=True)
        assert {e["label"] for e in row} <= set(names)
        assert abs(sum(e["score"] for e in row) - 1.0) < 1e-4
    raw = base64.b64decode(_png(x[0]))
    one = httpx.post(
        keyed.url + "/predict", content=raw, headers={**h, "Content-Type": "image/png"}
    )
    first = rows.json()[0]
    assert [e["label"] for e in one.json()] == [e["label"] for e in first]
    assert np.allclose([e["score"] for e in one.json()], [e["score"] for e in first], atol=1e-5)
    bad = httpx.post(keyed.url + "/predict", json={"pictures": []}, headers=h)
    assert bad.status_code == 400 and "images" in bad.json()["error"]


def test_query_log_records_client_time_and_count_never_images(keyed: Server) -> None:
    before = keyed.served_images()
    h = {"X-API-Key": KEY}
    httpx.post(keyed.url + "/v2/models/quad/infer", json=_infer_body(_images(5)), headers=h)
    assert keyed.served_images() == before + 5
    last = json.loads(keyed.query_log.read_text().splitlines()[-1])
    assert set(last) == {"time", "client", "endpoint", "model", "n_images"}
    assert last["client"] == "127.0.0.1" and last["n_images"] == 5


def test_rate_limit_answers_429_with_retry_after(
    target: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_server(target, tmp_path_factory.mktemp("rl"), "--rate-limit", "2") as s:
        body = _infer_body(_images(1))
        url = s.url + "/v2/models/quad/infer"
        t0 = time.monotonic()
        codes = []
        with httpx.Client() as c:
            for _ in range(12):
                r = c.post(url, json=body)
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert "rate limit" in r.json()["error"]
        elapsed = time.monotonic() - t0
        ok = codes.count(200)
        assert codes.count(429) > 0 and ok + codes.count(429) == 12
        assert ok <= 2 + 2 * elapsed + 1  # burst 2, then 2 requests/s
        assert s.served_images() == ok


def test_fault_plan_rejects_bad_specs() -> None:
    assert FaultPlan.from_json('{"drop": 0.5, "sequence": ["ok"]}').drop == 0.5
    with pytest.raises(ConfigError, match="sum <= 1"):
        FaultPlan.from_json('{"drop": 0.7, "error500": 0.7}')
    with pytest.raises(ConfigError, match="keys"):
        FaultPlan.from_json('{"explode": 1}')
    with pytest.raises(ConfigError, match="sequence"):
        FaultPlan.from_json('{"sequence": ["boom"]}')
