"""``copycat serve``: a target server to audit, speaking the Open Inference Protocol.

The model owner's side. A target folder is served with FastAPI over the KServe V2 REST API
(``/v2/health/live|ready``, ``/v2/models/{name}``, ``/v2/models/{name}/ready``,
``/v2/models/{name}/infer``; UINT8 or FP32 tensors, or BYTES holding base64 PNG/JPEG) and a plain
JSON endpoint, ``POST /predict`` (``{"images": [base64, ...]}`` in, one list of
``{"label", "score"}`` per image out). What the answers reveal is set by ``output`` (``label``,
``topk:K``, ``probs``, ``rounded:D``), through the same wrappers as local oracles.

Defences: an optional API key (``Authorization: Bearer KEY`` or ``X-API-Key``; 401 otherwise),
body and batch limits (413), a per-client token-bucket rate limit (429 with ``Retry-After``) and
a JSON-lines query log (client, time, number of images; never the images).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError

from copycat import __version__
from copycat.errors import ConfigError
from copycat.imageio import fit_to_shape
from copycat.oracle import Answer, TorchOracle, restrict
from copycat.serve_faults import FaultInjector, FaultPlan

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096
MAX_SIDE = 2048


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}`` (the OIP error format)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: Any
    parameters: dict[str, Any] | None = None


class InferOutputRequest(BaseModel):
    name: str


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput]
    outputs: list[InferOutputRequest] | None = None
    parameters: dict[str, Any] | None = None


class PredictRequest(BaseModel):
    images: list[str]


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second, bursts up to ``max(1, rate)``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float | None:
        """None if allowed; else seconds until a request would be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return None
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate


class QueryLog:
    """Appends one JSON line per answered request: time, client, endpoint, model, n_images."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, *, client: str, endpoint: str, model: str, n_images: int) -> None:
        rec = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": client,
            "endpoint": endpoint,
            "model": model,
            "n_images": n_images,
        }
        line = json.dumps(rec) + "\n"
        with self._lock, self.path.open("a") as f:
            f.write(line)


def _decode_image(b64: str, shape: tuple[int, int, int], i: int) -> torch.Tensor:
    """A base64 PNG/JPEG as a (C, H, W) uint8 tensor fitted to ``shape``."""
    try:
        raw = base64.b64decode(b64, validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ApiError(413, f"image {i} is {w}x{h} pixels; at most {MAX_IMAGE_PIXELS}")
            im.load()
            return fit_to_shape(im.convert("RGB"), shape)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"image {i} is not valid base64 ({exc})") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ApiError(400, f"image {i} is not a PNG/JPEG image ({exc})") from exc


def _decode_tensor(inp: InferInput, shape: tuple[int, int, int]) -> torch.Tensor:
    """An OIP input tensor as (N, C, H, W) float in [0, 1]."""
    dt = inp.datatype.upper()
    if dt == "BYTES":
        items = np.asarray(inp.data, dtype=object).ravel().tolist()
        if not all(isinstance(s, str) for s in items):
            raise ApiError(400, "BYTES data must be base64 strings holding PNG/JPEG images")
        return torch.stack([_decode_image(s, shape, i) for i, s in enumerate(items)]).float() / 255
    if dt not in ("UINT8", "FP32", "FP64"):
        raise ApiError(400, f"datatype {inp.datatype!r} is not accepted; use UINT8, FP32 or BYTES")
    if len(inp.shape) != 4 or inp.shape[1] != shape[0]:
        raise ApiError(400, f"input shape {inp.shape} is invalid; expected [N, {shape[0]}, H, W]")
    if any(d < 1 for d in inp.shape) or max(inp.shape[2:]) > MAX_SIDE:
        raise ApiError(400, f"input shape {inp.shape} is invalid; sides must be 1..{MAX_SIDE}")
    try:
        arr = np.asarray(inp.data, dtype=np.float64 if dt != "UINT8" else None)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"input data is not a numeric array ({exc})") from exc
    if arr.size != math.prod(inp.shape):
        raise ApiError(
            400, f"input has {arr.size} values; shape {inp.shape} needs {math.prod(inp.shape)}"
        )
    if dt == "UINT8":
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ApiError(400, "UINT8 data must be integers in 0..255")
        return torch.from_numpy(arr.astype(np.float32).reshape(inp.shape)) / 255.0
    if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
        raise ApiError(400, "FP32 data must be finite numbers (images in [0, 1])")
    return torch.from_numpy(arr.astype(np.float32).reshape(inp.shape))


def create_app(
    oracle_folder: str | Path,
    *,
    name: str | None = None,
    output: str = "label",
    api_key: str | None = None,
    rate_limit: float | None = None,
    max_batch: int = 256,
    max_body_bytes: int = 16 * 1024 * 1024,
    query_log: str | Path | None = None,
    faults: FaultPlan | None = None,
) -> Any:
    """The FastAPI app serving the target in ``oracle_folder`` (wrapped by ``faults`` if given)."""
    if max_batch < 1:
        raise ConfigError(f"max_batch={max_batch} is invalid; accepted: >= 1")
    if rate_limit is not None and rate_limit <= 0:
        raise ConfigError(f"rate_limit={rate_limit} is invalid; accepted: requests/s > 0")
    folder = Path(oracle_folder)
    model_name = name or folder.resolve().name
    base = TorchOracle(folder)
    oracle = restrict(base, output)
    limiter = RateLimiter(rate_limit) if rate_limit else None
    qlog = QueryLog(query_log) if query_log else None
    key = api_key.encode() if api_key else None
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(base.model)  # load once, before the first request
        state["ready"] = True
        log.info("serving %s as %r (output %s)", folder, model_name, output)
        yield

    app = FastAPI(title="copycat target", version=__version__, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def guard(request: Request, model: str | None = None, *, costly: bool = False) -> None:
        if key is not None:
            auth = request.headers.get("authorization", "")
            given = (
                auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
            )
            if not hmac.compare_digest(given.encode(), key):
                raise ApiError(
                    401,
                    "missing or wrong API key; send 'Authorization: Bearer KEY' or "
                    "'X-API-Key: KEY'",
                    {"WWW-Authenticate": "Bearer"},
                )
        if model is not None and model != model_name:
            raise ApiError(
                404, f"model {model!r} is not served here; this server has {model_name!r}"
            )
        if costly and limiter is not None:
            wait = limiter.acquire(client_of(request))
            if wait is not None:
                raise ApiError(
                    429,
                    f"rate limit of {rate_limit:g} requests/s exceeded; retry later",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise ApiError(413, f"body of {declared} bytes exceeds the limit of {max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise ApiError(413, f"body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(body: bytes, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            errs = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise ApiError(400, f"malformed request: {errs}") from exc

    def check_batch(n: int) -> None:
        if n > max_batch:
            raise ApiError(413, f"batch of {n} images exceeds the limit of {max_batch}; split it")
        if n < 1:
            raise ApiError(400, "the request holds no images")

    def answer(x: torch.Tensor, request: Request, endpoint: str) -> Answer:
        ans = oracle.query(x)
        if qlog is not None:
            qlog.write(
                client=client_of(request), endpoint=endpoint, model=model_name, n_images=len(x)
            )
        return ans

    def metadata() -> dict[str, Any]:
        card = base.card
        outs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
        if output != "label":
            outs.append({"name": "probs", "datatype": "FP32", "shape": [-1, card.num_classes]})
        return {
            "name": model_name,
            "versions": ["1"],
            "platform": "pytorch",
            "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, *card.input_shape]}],
            "outputs": outs,
            "parameters": {
                "num_classes": card.num_classes,
                "class_names": list(card.class_names),
                "output": output,
                "accepted_datatypes": ["UINT8", "FP32", "BYTES"],
                "max_batch": max_batch,
            },
        }

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": state["ready"]}

    @app.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "copycat", "version": __version__, "extensions": []}

    @app.get("/v2/models/{model}")
    def model_metadata(model: str, request: Request) -> dict[str, Any]:
        guard(request, model)
        return metadata()

    @app.get("/v2/models/{model}/ready")
    def model_ready(model: str, request: Request) -> dict[str, Any]:
        guard(request, model)
        return {"name": model_name, "ready": state["ready"]}

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> dict[str, Any]:
        guard(request, model, costly=True)
        req: InferRequest = parse(await read_body(request), InferRequest)
        if len(req.inputs) != 1:
            raise ApiError(400, f"expected one input tensor (the images), got {len(req.inputs)}")
        inp = req.inputs[0]
        check_batch(inp.shape[0] if inp.shape else 0)
        x = await run_in_threadpool(_decode_tensor, inp, base.input_shape)
        check_batch(len(x))
        ans = await run_in_threadpool(answer, x, request, "infer")
        n = len(x)
        outs = [{"name": "label", "datatype": "INT64", "shape": [n], "data": ans.labels.tolist()}]
        if ans.probs is not None:
            k = ans.probs.shape[1]
            data = ans.probs.ravel().tolist()
            outs.append({"name": "probs", "datatype": "FP32", "shape": [n, k], "data": data})
        if req.outputs:
            wanted = {o.name for o in req.outputs}
            unknown = wanted - {o["name"] for o in outs}
            if unknown:
                raise ApiError(
                    400, f"unknown outputs {sorted(unknown)}; this model has label, probs"
                )
            outs = [o for o in outs if o["name"] in wanted]
        reply: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": outs}
        if req.id is not None:
            reply["id"] = req.id
        return reply

    @app.post("/predict", response_model=None)
    async def predict(request: Request) -> list[Any]:
        guard(request, costly=True)
        body = await read_body(request)
        single = request.headers.get("content-type", "").startswith("image/")
        images = [base64.b64encode(body).decode()] if single else parse(body, PredictRequest).images
        check_batch(len(images))
        shape = base.input_shape

        def decode() -> torch.Tensor:
            return (
                torch.stack([_decode_image(s, shape, i) for i, s in enumerate(images)]).float()
                / 255
            )

        x = await run_in_threadpool(decode)
        ans = await run_in_threadpool(answer, x, request, "predict")
        names = base.card.class_names
        rows: list[Any] = []
        for i in range(len(x)):
            if ans.probs is None:
                rows.append([{"label": names[int(ans.labels[i])]}])
                continue
            p = ans.probs[i]
            order = torch.argsort(p, descending=True, stable=True).tolist()
            rows.append([{"label": names[j], "score": float(p[j])} for j in order if p[j] > 0])
        return rows[0] if single else rows

    if faults is not None:
        log.warning("fault injection is on (test only): %s", faults)
        return FaultInjector(app, faults)
    return app


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    name: str | None = None,
    output: str = "label",
    api_key: str | None = None,
    rate_limit: float | None = None,
    max_batch: int = 256,
    max_body_bytes: int = 16 * 1024 * 1024,
    query_log: str | Path | None = "query_log.jsonl",
    faults: FaultPlan | None = None,
    log_level: str = "info",
) -> None:
    """Serve the target in ``model`` with uvicorn until interrupted (127.0.0.1 by default)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it may query it", host)
    app = create_app(
        model,
        name=name,
        output=output,
        api_key=api_key,
        rate_limit=rate_limit,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        query_log=query_log,
        faults=faults,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
