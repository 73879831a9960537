"""``copycat serve`` under uvicorn on 127.0.0.1: protocol, limits, key, rate limit, query log."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from copycat.config import ServeConfig
from copycat.errors import ConfigError
from copycat.oracles.local import TorchOracle
from copycat.serve.app import serve
from copycat.serve.decode import image_size, plan_encoded
from copycat.serve.faults import FaultPlan
from copycat.serve.guards import ApiError, RateLimiter

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
            b'{"inputs": [{"name": "i", "shape": [1, 1, 1, 2], "datatype": "FP32", '
            b'"data": [0.5, 255]}]}',
            "divide 0..255 pixels by 255",
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


def _header_only_png(w: int, h: int) -> str:
    """A PNG signature and IHDR, no pixel data: decoding it fails, reading its size does not."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4
    return base64.b64encode(raw).decode()


def test_bytes_requests_are_counted_and_sized_before_decoding(keyed: Server) -> None:
    h = {"X-API-Key": KEY}
    url = keyed.url + "/v2/models/quad/infer"
    before = keyed.served_images()
    # The declared shape says 1 image; the data holds 9 (the limit is 8): counted, not trusted.
    lie = {"name": "images", "shape": [1], "datatype": "BYTES"}
    lie["data"] = [_header_only_png(28, 28)] * 9
    r = httpx.post(url, json={"inputs": [lie]}, headers=h)
    assert r.status_code == 413 and "limit of 8" in r.json()["error"]
    # 8 flat 4096x4096 images fit the body but not the pixel budget: 413 before any decoding
    # (decoding these header-only PNGs would have failed with a 400).
    flat = {"name": "images", "shape": [8], "datatype": "BYTES"}
    flat["data"] = [_header_only_png(4096, 4096)] * 8
    r = httpx.post(url, json={"inputs": [flat]}, headers=h)
    assert r.status_code == 413 and "--max-request-mp" in r.json()["error"]
    huge = {"images": [_header_only_png(5000, 5000)]}
    r = httpx.post(keyed.url + "/predict", json=huge, headers=h)
    assert r.status_code == 413 and "5000x5000" in r.json()["error"]
    r = httpx.post(keyed.url + "/predict", json={"images": [_header_only_png(28, 28)]}, headers=h)
    assert r.status_code == 400 and "PNG/JPEG" in r.json()["error"]
    assert keyed.served_images() == before


@pytest.mark.parametrize(
    ("size", "mode", "fmt", "opts"),
    [
        ((37, 21), "L", "PNG", {}),
        ((300, 200), "RGB", "JPEG", {}),
        ((64, 48), "RGB", "JPEG", {"progressive": True}),
        ((5, 9), "L", "JPEG", {"quality": 50}),
    ],
)
def test_image_size_reads_png_and_jpeg_headers(
    size: tuple[int, int], mode: str, fmt: str, opts: dict[str, object]
) -> None:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt, **opts)
    assert image_size(buf.getvalue()) == size
    assert image_size(b"GIF89a" + bytes(30)) is None
    assert image_size(buf.getvalue()[:3]) is None


def test_rate_limiter_table_is_bounded_least_recent_first() -> None:
    lim = RateLimiter(0.001, burst=2.0, max_clients=3)
    for c in ("a", "b", "c", "a", "d"):
        assert lim.acquire(c) is None
    assert len(lim) == 3  # "b" was forgotten, the least recently seen
    assert lim.acquire("a") is not None  # "a" is remembered: its burst of 2 is spent
    assert lim.acquire("b", 2.0) is None  # "b" starts afresh with a full burst
    assert lim.acquire("d", 2.0) is not None  # 1 token left; the refused take costs none
    assert lim.acquire("d") is None and len(lim) == 3


def test_image_rate_limit_per_client_behind_a_trusted_proxy(
    target: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    args = ["--rate-limit-images", "0.5", "--max-batch", "6", "--trusted-proxy-header"]
    args += ["X-Forwarded-For"]
    # The old environment switch for fault injection must do nothing now.
    env = env_with_src(COPYCAT_FAULTS='{"error500": 1.0}')
    with running_server(target, tmp_path_factory.mktemp("img"), *args, env=env) as s:
        url = s.url + "/v2/models/quad/infer"
        a = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}  # the proxy appended 10.0.0.1
        assert httpx.post(url, json=_infer_body(_images(4)), headers=a).status_code == 200
        r = httpx.post(url, json=_infer_body(_images(4)), headers=a)  # 2 images left: 429
        assert r.status_code == 429 and "images/s" in r.json()["error"]
        assert int(r.headers["Retry-After"]) >= 4
        b = {"X-Forwarded-For": "10.0.0.2"}
        assert httpx.post(url, json=_infer_body(_images(6)), headers=b).status_code == 200
        clients = [json.loads(ln)["client"] for ln in s.query_log.read_text().splitlines()]
        assert clients == ["10.0.0.1", "10.0.0.2"] and s.served_images() == 10
        assert httpx.put(s.url + "/_faults", content=b"{}").status_code in (404, 405)


def test_proxy_header_is_ignored_unless_trusted(keyed: Server) -> None:
    h = {"X-API-Key": KEY, "X-Forwarded-For": "10.9.9.9"}
    httpx.post(keyed.url + "/v2/models/quad/infer", json=_infer_body(_images(1)), headers=h)
    assert json.loads(keyed.query_log.read_text().splitlines()[-1])["client"] == "127.0.0.1"


def test_fault_control_needs_the_api_key_and_is_off_the_help(
    target: Path, tmp_path_factory: pytest.TempPathFactory, keyed: Server
) -> None:
    hk = {"X-API-Key": KEY}
    r = httpx.put(keyed.url + "/_faults", content=b"{}", headers=hk)
    assert r.status_code in (404, 405)  # no fault injection, no control endpoint
    args = ["--api-key-env", "TEST_KEY", "--faults", "{}"]
    with running_server(
        target, tmp_path_factory.mktemp("fk"), *args, env=env_with_src(TEST_KEY=KEY)
    ) as s:
        plan = json.dumps({"error500": 1.0}).encode()
        assert httpx.put(s.url + "/_faults", content=plan).status_code == 401
        r = httpx.put(s.url + "/_faults", content=plan, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401
        ok = httpx.put(s.url + "/_faults", content=plan, headers={"X-API-Key": KEY})
        assert ok.status_code == 200
        r = httpx.post(s.url + "/v2/models/quad/infer", json=_infer_body(_images(1)))
        assert r.status_code == 500 and "injected" in r.json()["error"]
    from typer.testing import CliRunner

    from copycat.cli.main import app

    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--rate-limit-images" in out and "--trusted-proxy-header" in out
    assert "--faults" not in out
    with pytest.raises(ConfigError, match="loopback"):
        serve(target, config=ServeConfig(host="0.0.0.0"), faults=FaultPlan())


def test_a_jpeg_with_a_second_larger_frame_header_is_refused_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="JPEG")
    raw = buf.getvalue()
    i = raw.index(b"\xff\xc0")  # the start-of-frame segment; Pillow keeps the last one it reads
    (n,) = struct.unpack(">H", raw[i + 2 : i + 4])
    second = bytearray(raw[i : i + 2 + n])
    second[5:9] = struct.pack(">HH", 5000, 5000)
    evil = raw[: i + 2 + n] + bytes(second) + raw[i + 2 + n :]
    planned = plan_encoded([evil], (1, 28, 28), max_batch=4, max_pixels=10**6)
    assert planned.pixels == 64  # the header reader saw the first frame header
    with pytest.raises(ApiError, match="two sizes"):
        planned.decode()
