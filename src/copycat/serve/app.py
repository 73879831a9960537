"""``copycat serve``: a target server to audit, speaking the Open Inference Protocol.

The model owner's side. A target folder is served with FastAPI over the KServe V2 REST API
(``/v2/health/live|ready``, ``/v2/models/{name}``, ``/v2/models/{name}/ready``,
``/v2/models/{name}/infer``, also under ``/versions/1``; UINT8 or FP32 tensors, or BYTES holding
PNG/JPEG, as JSON or with the binary tensor data extension, :mod:`.wire`) and a plain JSON
endpoint, ``POST /predict`` (``{"images": [base64, ...]}`` in, one list of
``{"label", "score"}`` per image out). What the answers reveal is set by ``output`` (``label``,
``topk:K``, ``probs``, ``rounded:D``), through the same wrappers as local oracles.

Guards (:mod:`copycat.serve.guards`): an optional API key (``Authorization: Bearer KEY`` or
``X-API-Key``; 401 otherwise), body and batch limits (413), a per-client token-bucket rate limit
(429 with ``Retry-After``) and a JSON-lines query log (client, time, number of images; never
the images). Images are counted, and PNG/JPEG sizes read from their headers, before any decoding.
Fault injection (:mod:`.faults`) is for tests only: loopback only, its control endpoint behind
the API key.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from copycat import __version__
from copycat.config import ServeConfig
from copycat.defences.base import QueryRefused, as_client
from copycat.defences.registry import apply_defences
from copycat.errors import ConfigError
from copycat.oracles.base import Answer, Oracle
from copycat.oracles.local import TorchOracle
from copycat.oracles.outputs import restrict
from copycat.serve import wire
from copycat.serve.decode import (
    Planned,
    PredictRequest,
    b64_items,
    plan_encoded,
    plan_images,
)
from copycat.serve.faults import FaultPlan, with_fault_control
from copycat.serve.guards import ApiError, Guard, QueryLog, parse_body, read_body

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(slots=True, kw_only=True)
class Served:
    """One served target: the model, what its answers reveal, the guards and the query log."""

    cfg: ServeConfig
    base: TorchOracle
    oracle: Oracle
    guard: Guard
    qlog: QueryLog | None
    ready: bool = False

    def answer(self, x: torch.Tensor, request: Request, endpoint: str) -> Answer:
        """Query the (defended, restricted) target for one request, logged per client."""
        client = self.guard.client_of(request)
        with as_client(client):  # defences keep their state per client
            try:
                ans = self.oracle.query(x)
            except QueryRefused as exc:  # a detector blocked this client
                raise ApiError(403, str(exc)) from exc
        if self.qlog is not None:
            self.qlog.write(
                client=client, endpoint=endpoint, model=self.guard.model_name, n_images=len(x)
            )
        return ans

    async def answer_planned(self, planned: Planned, request: Request, endpoint: str) -> Answer:
        """A planned request, bounded by the per-client image rate before any pixel is decoded,
        then decoded and answered (both off the event loop)."""
        self.guard.images(request, planned.n_images)
        x = await run_in_threadpool(planned.decode)
        return await run_in_threadpool(self.answer, x, request, endpoint)


def create_app(
    oracle_folder: str | Path,
    *,
    config: ServeConfig | None = None,
    api_key: str | None = None,
    faults: FaultPlan | None = None,
) -> Any:
    """The FastAPI app serving the target in ``oracle_folder`` (wrapped by ``faults`` if given)."""
    cfg = config or ServeConfig()
    folder = Path(oracle_folder)
    base = TorchOracle(folder)
    guard = Guard(
        key=api_key,
        model_name=cfg.name or folder.resolve().name,
        rate_limit=cfg.rate_limit,
        image_rate_limit=cfg.rate_limit_images,
        max_batch=cfg.max_batch,
        max_clients=cfg.max_clients,
        proxy_header=cfg.trusted_proxy_header,
    )
    served = Served(
        cfg=cfg,
        base=base,
        # the target behind its defences (per-client state), then the output restriction
        oracle=restrict(apply_defences(base, cfg.defences), cfg.output),
        guard=guard,
        qlog=QueryLog(cfg.query_log) if cfg.query_log else None,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(base.model)  # load once, before the first request
        served.ready = True
        log.info("serving %s as %r (output %s)", folder, guard.model_name, cfg.output)
        yield

    app = FastAPI(title="copycat target", version=__version__, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    _add_metadata_routes(app, served)
    _add_inference_routes(app, served)
    if faults is not None:
        log.warning("fault injection is on (test only): %s", faults)
        return with_fault_control(app, faults, guard=guard)
    return app


def _check_version(version: str) -> None:
    if version != "1":
        raise ApiError(404, f"model version {version!r} is not served here; this server has 1")


def _add_metadata_routes(app: FastAPI, served: Served) -> None:
    """Health, server and model metadata: free, but model routes still check the key."""
    guard = served.guard

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": served.ready}

    @app.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "copycat", "version": __version__, "extensions": [wire.EXTENSION]}

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    def metadata_route(model: str, request: Request, version: str = "1") -> dict[str, Any]:
        guard(request, model)
        _check_version(version)
        return model_metadata(served.base, served.cfg, guard.model_name)

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    def model_ready(model: str, request: Request, version: str = "1") -> dict[str, Any]:
        guard(request, model)
        _check_version(version)
        return {"name": guard.model_name, "ready": served.ready}


def _add_inference_routes(app: FastAPI, served: Served) -> None:
    """The costly routes: every guard and bound runs before any pixel is decoded."""
    guard, cfg, base = served.guard, served.cfg, served.base

    @app.post("/v2/models/{model}/infer", response_model=None)
    @app.post("/v2/models/{model}/versions/{version}/infer", response_model=None)
    async def infer(model: str, request: Request, version: str = "1") -> Any:
        guard(request, model, costly=True)
        _check_version(version)
        body = await read_body(request, max_bytes=cfg.max_body_bytes)
        req, raw = wire.read_request(body, request.headers.get(wire.HEADER))
        binary = wire.binary_wanted(req)
        planned = await run_in_threadpool(
            plan_images,
            req.inputs[0],
            raw,
            base.input_shape,
            max_batch=cfg.max_batch,
            max_pixels=cfg.max_request_pixels,
        )
        ans = await served.answer_planned(planned, request, "infer")
        outs, arrays = infer_outputs(ans, [o.name for o in req.outputs] if req.outputs else None)
        header: dict[str, Any] = {
            "model_name": guard.model_name,
            "model_version": "1",
            "outputs": outs,
        }
        if req.id is not None:
            header["id"] = req.id
        return wire.reply(header, arrays, binary)

    @app.post("/predict", response_model=None)
    async def predict(request: Request) -> list[Any]:
        guard(request, costly=True)
        body = await read_body(request, max_bytes=cfg.max_body_bytes)
        single = request.headers.get("content-type", "").startswith("image/")
        blobs = (
            [body]
            if single
            else b64_items(parse_body(body, PredictRequest).images, limit=cfg.max_batch)
        )
        planned = await run_in_threadpool(
            plan_encoded,
            blobs,
            base.input_shape,
            max_batch=cfg.max_batch,
            max_pixels=cfg.max_request_pixels,
        )
        ans = await served.answer_planned(planned, request, "predict")
        rows = predict_rows(ans, base.card.class_names)
        return rows[0] if single else rows


def model_metadata(base: TorchOracle, cfg: ServeConfig, name: str) -> dict[str, Any]:
    """The OIP model metadata: input shape and datatype, outputs, classes and limits."""
    card = base.card
    outs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
    if cfg.output != "label":
        outs.append({"name": "probs", "datatype": "FP32", "shape": [-1, card.num_classes]})
    return {
        "name": name,
        "versions": ["1"],
        "platform": "pytorch",
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, *card.input_shape]}],
        "outputs": outs,
        "parameters": {
            "num_classes": card.num_classes,
            "class_names": list(card.class_names),
            "output": cfg.output,
            "accepted_datatypes": ["UINT8", "FP32", "BYTES"],
            "max_batch": cfg.max_batch,
        },
    }


def infer_outputs(
    ans: Answer, wanted: list[str] | None
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The OIP output tensors of an answer (without data) restricted to the ``wanted`` names if
    given, and their arrays by name: label (N,) int64, probs (N, K) float32."""
    n = len(ans.labels)
    arrays = {"label": ans.labels.numpy().astype(np.int64)}
    outs: list[dict[str, Any]] = [{"name": "label", "datatype": "INT64", "shape": [n]}]
    if ans.probs is not None:
        arrays["probs"] = ans.probs.numpy().astype(np.float32)
        outs.append({"name": "probs", "datatype": "FP32", "shape": list(arrays["probs"].shape)})
    if wanted:
        unknown = set(wanted) - set(arrays)
        if unknown:
            raise ApiError(
                400, f"unknown outputs {sorted(unknown)}; this model has {', '.join(arrays)}"
            )
        outs = [o for o in outs if o["name"] in wanted]
    return outs, arrays


def predict_rows(ans: Answer, names: tuple[str, ...]) -> list[Any]:
    """``/predict`` rows: per image, ``{label, score}`` by falling score (label only if hidden)."""
    rows: list[Any] = []
    for i in range(len(ans.labels)):
        if ans.probs is None:
            rows.append([{"label": names[int(ans.labels[i])]}])
            continue
        p = ans.probs[i]
        order = torch.argsort(p, descending=True, stable=True).tolist()
        rows.append([{"label": names[j], "score": float(p[j])} for j in order if p[j] > 0])
    return rows


def serve(
    model: str | Path,
    *,
    config: ServeConfig | None = None,
    api_key: str | None = None,
    faults: FaultPlan | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``model`` until interrupted (127.0.0.1 by default)."""
    import uvicorn

    cfg = config or ServeConfig()
    if faults is not None and cfg.host not in LOOPBACK:
        raise ConfigError(
            f"fault injection is for tests and serves on loopback only, not {cfg.host!r}; "
            "drop --faults or use --host 127.0.0.1"
        )
    if cfg.host not in LOOPBACK and api_key is None:
        log.warning(
            "serving on %s without an API key: anyone who can reach it may query it", cfg.host
        )
    app = create_app(model, config=cfg, api_key=api_key, faults=faults)
    # proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from any loopback peer;
    # the client address comes from a proxy's header only with --trusted-proxy-header.
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
    )
