"""The binary tensor data extension of ``copycat serve`` on 127.0.0.1: NVIDIA's ``tritonclient``
(a client nobody here wrote) with its defaults and with JSON, copycat's own ``oip+http`` oracle,
and the 400s/413s for inconsistent or oversized binary requests."""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from copycat.errors import OracleError
from copycat.oracles.http.oip import read_reply
from copycat.oracles.local import TorchOracle
from copycat.oracles.registry import parse_oracle_spec

from .http_support import Server, running_server, synthetic_set, tiny_target

triton = pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")

HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_target(tmp_path_factory.mktemp("target"))


@pytest.fixture(scope="module")
def server(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--output", "probs", "--max-batch", "16", "--max-request-mp", "0.05"]
    with running_server(target, tmp_path_factory.mktemp("bin"), *args) as s:
        yield s


@pytest.fixture(scope="module")
def local(target: Path) -> TorchOracle:
    return TorchOracle(target)


def _images(n: int) -> np.ndarray:
    return synthetic_set(n, seed=7).images.numpy()  # (n, 1, 28, 28) uint8


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a[0], "L").save(buf, format="PNG")
    return buf.getvalue()


def _client(server: Server) -> object:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def test_tritonclient_default_infer_is_binary_both_ways(server: Server, local: TorchOracle) -> None:
    x = _images(4)
    want = local.query(torch.from_numpy(x).float() / 255)
    client = _client(server)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]  # type: ignore[attr-defined]
    assert client.get_model_metadata("quad")["inputs"][0]["datatype"] == "UINT8"  # type: ignore[attr-defined]
    inp = triton.InferInput("images", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)  # the default: binary_data=True
    result = client.infer("quad", inputs=[inp])  # type: ignore[attr-defined]
    outs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in outs.values())
    assert result.as_numpy("label").tolist() == want.labels.tolist()
    assert np.allclose(result.as_numpy("probs"), want.probs.numpy(), atol=1e-6)
    assert result.as_numpy("probs").shape == (4, 4)
    again = client.infer("quad", inputs=[inp], model_version="1")  # type: ignore[attr-defined]
    assert again.as_numpy("label").tolist() == want.labels.tolist()
    assert client.is_model_ready("quad", "1") and not client.is_model_ready("quad", "2")  # type: ignore[attr-defined]


def test_tritonclient_json_in_and_out(server: Server, local: TorchOracle) -> None:
    x = _images(3)
    want = local.query(torch.from_numpy(x).float() / 255)
    inp = triton.InferInput("images", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=False)
    outs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probs")]
    result = _client(server).infer("quad", inputs=[inp], outputs=outs)  # type: ignore[attr-defined]
    assert all("data" in o for o in result.get_response()["outputs"])
    assert result.as_numpy("label").tolist() == want.labels.tolist()
    # mixed: JSON input, one output binary and the other JSON
    mixed = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("probs", False)]
    r2 = _client(server).infer("quad", inputs=[inp], outputs=mixed)  # type: ignore[attr-defined]
    by = {o["name"]: o for o in r2.get_response()["outputs"]}
    assert "data" not in by["label"] and "data" in by["probs"]
    assert r2.as_numpy("label").tolist() == want.labels.tolist()


def test_tritonclient_fp32_and_png_bytes_binary(server: Server, local: TorchOracle) -> None:
    x = _images(5)
    want = local.query(torch.from_numpy(x).float() / 255).labels.tolist()
    fp = triton.InferInput("images", list(x.shape), "FP32")
    fp.set_data_from_numpy(x.astype(np.float32) / 255)
    out = [triton.InferRequestedOutput("label")]
    r = _client(server).infer("quad", inputs=[fp], outputs=out)  # type: ignore[attr-defined]
    assert r.as_numpy("label").tolist() == want
    pngs = np.array([_png(a) for a in x], dtype=np.object_)
    bts = triton.InferInput("images", [5], "BYTES")
    bts.set_data_from_numpy(pngs)
    r = _client(server).infer("quad", inputs=[bts], outputs=out)  # type: ignore[attr-defined]
    assert r.as_numpy("label").tolist() == want


def test_oip_oracle_detects_the_extension_and_sends_binary(
    server: Server, local: TorchOracle
) -> None:
    x = torch.from_numpy(_images(20)).float() / 255
    want = local.query(x)
    seen = {}
    for send_as in ("auto", "binary", "json", "png"):
        oracle = parse_oracle_spec(
            f"oip+{server.url}/v2/models/quad", output="probs", send_as=send_as, request_batch=8
        )
        ans = oracle.query(x)
        seen[send_as] = oracle.binary  # type: ignore[attr-defined]
        assert torch.equal(ans.labels, want.labels)
        assert ans.probs is not None and torch.allclose(ans.probs, want.probs, atol=1e-6)
        assert oracle.ledger.queries == 20  # type: ignore[attr-defined]
        oracle.close()  # type: ignore[attr-defined]
    assert seen == {"auto": True, "binary": True, "json": False, "png": False}


def _post(server: Server, head: dict[str, object], tail: bytes, length: int | None = None) -> Any:
    blob = json.dumps(head).encode()
    headers = {HEADER: str(len(blob) if length is None else length)}
    return httpx.post(server.url + "/v2/models/quad/infer", content=blob + tail, headers=headers)


def _tensor(shape: list[int], dtype: str, size: int) -> dict[str, object]:
    t = {"name": "images", "shape": shape, "datatype": dtype}
    return {"inputs": [{**t, "parameters": {"binary_data_size": size}}]}


@pytest.mark.parametrize(
    ("head", "tail", "length", "status", "says"),
    [
        (_tensor([1, 1, 28, 28], "UINT8", 784), bytes(784), 10_000, 400, "has only"),
        (_tensor([1, 1, 28, 28], "UINT8", 784), bytes(784), -1, 400, "positive byte count"),
        (_tensor([2, 1, 28, 28], "UINT8", 784), bytes(784), None, 400, "needs 1568"),
        (_tensor([1, 1, 28, 28], "FP32", 784), bytes(784), None, 400, "needs 3136"),
        (_tensor([1, 1, 28, 28], "UINT8", 784), bytes(790), None, 400, "beyond"),
        (_tensor([1, 1, 28, 28], "UINT8", 900), bytes(784), None, 400, "only 784 bytes"),
        (_tensor([1, 1, 28, 28], "UINT8", True), bytes(784), None, 400, "not a byte count"),
        (_tensor([17, 1, 28, 28], "UINT8", 17 * 784), bytes(17 * 784), None, 413, "limit of 16"),
        (_tensor([1], "BYTES", 6), struct.pack("<I", 9) + b"xy", None, 400, "declares 9"),
        (_tensor([1], "BYTES", 3), b"abc", None, 400, "cut short"),
        (_tensor([2], "BYTES", 9), struct.pack("<I", 5) + b"hello", None, 400, "does not match"),
    ],
)
def test_inconsistent_binary_requests_get_clear_errors(
    server: Server,
    head: dict[str, object],
    tail: bytes,
    length: int | None,
    status: int,
    says: str,
) -> None:
    before = server.served_images()
    r = _post(server, head, tail, length)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]
    assert server.served_images() == before


def test_binary_body_without_the_header_names_it(server: Server) -> None:
    blob = json.dumps(_tensor([1, 1, 28, 28], "UINT8", 784)).encode() + bytes(784)
    r = httpx.post(server.url + "/v2/models/quad/infer", content=blob)
    assert r.status_code == 400 and HEADER in r.json()["error"]


def test_binary_images_are_counted_from_their_headers_before_decoding(server: Server) -> None:
    def fake_png(w: int, h: int) -> bytes:  # a header only: decoding it would fail with a 400
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4

    def elements(items: list[bytes]) -> bytes:
        return b"".join(struct.pack("<I", len(b)) + b for b in items)

    many = elements([fake_png(28, 28)] * 40)  # more images than --max-batch 16
    r = _post(server, _tensor([40], "BYTES", len(many)), many)
    assert r.status_code == 413 and "limit of 16" in r.json()["error"]
    big = elements([fake_png(300, 300)])  # 90,000 pixels > --max-request-mp 0.05
    r = _post(server, _tensor([1], "BYTES", len(big)), big)
    assert r.status_code == 413 and "--max-request-mp" in r.json()["error"]
    gif = elements([b"GIF89a" + bytes(20)])
    r = _post(server, _tensor([1], "BYTES", len(gif)), gif)
    assert r.status_code == 400 and "PNG/JPEG" in r.json()["error"]


def test_binary_reply_cut_short_is_a_retryable_parse_error() -> None:
    out = {"name": "label", "datatype": "INT64", "shape": [2]}
    head = json.dumps({"outputs": [{**out, "parameters": {"binary_data_size": 16}}]}).encode()
    hdr = {HEADER: str(len(head))}
    whole = httpx.Response(
        200, content=head + np.array([3, 1]).astype("<i8").tobytes(), headers=hdr
    )
    assert read_reply(whole)["outputs"][0]["data"].tolist() == [3, 1]
    with pytest.raises(json.JSONDecodeError, match="needs 16 bytes"):
        read_reply(httpx.Response(200, content=head + bytes(8), headers=hdr))
    with pytest.raises(json.JSONDecodeError):
        read_reply(httpx.Response(200, content=head, headers={HEADER: "99999"}))
    odd = head.replace(b"INT64", b"BYTES")
    with pytest.raises(OracleError, match="--send-as json"):
        read_reply(httpx.Response(200, content=odd + bytes(16), headers=hdr))


def test_png_bytes_in_json_are_still_base64(server: Server, local: TorchOracle) -> None:
    x = _images(2)
    data = [base64.b64encode(_png(a)).decode() for a in x]
    body = {"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": data}]}
    body["parameters"] = {"binary_data_output": True}  # type: ignore[assignment]
    r = httpx.post(server.url + "/v2/models/quad/infer", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    labels = read_reply(r)["outputs"][0]["data"]
    assert labels.tolist() == local.query(torch.from_numpy(x).float() / 255).labels.tolist()
