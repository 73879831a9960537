"""``copycat serve``: a target server to audit, speaking the Open Inference Protocol.

The model owner's side. A target folder is served with FastAPI over the KServe V2 REST API
(``/v2/health/live|ready``, ``/v2/models/{name}``, ``/v2/models/{name}/ready``,
``/v2/models/{name}/infer``; UINT8 or FP32 tensors, or BYTES holding base64 PNG/JPEG) and a plain
JSON endpoint, ``POST /predict`` (``{"images": [base64, ...]}`` in, one list of
``{"label", "score"}`` per image out). What the answers reveal is set by ``output`` (``label``,
``topk:K``, ``probs``, ``rounded:D``), through the same wrappers as local oracles.

Guards (:mod:`copycat.serve.guards`): an optional API key (``Authorization: Bearer KEY`` or
``X-API-Key``; 401 otherwise), body and batch limits (413), a per-client token-bucket rate limit
(429 with ``Retry-After``) and a JSON-lines query log (client, time, number of images; never
the images).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from copycat import __version__
from copycat.config import ServeConfig
from copycat.defences.base import QueryRefused, as_client
from copycat.defences.registry import apply_defences
from copycat.oracles.base import Answer
from copycat.oracles.local import TorchOracle
from copycat.oracles.outputs import restrict
from copycat.serve.decode import (
    InferRequest,
    PredictRequest,
    decode_image,
    decode_tensor,
)
from copycat.serve.faults import FaultInjector, FaultPlan
from copycat.serve.guards import (
    ApiError,
    Guard,
    QueryLog,
    check_batch,
    client_of,
    parse_body,
    read_body,
)

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
    # defences hook: the target behind cfg.defences (per-client state), then the output restriction
    oracle = restrict(apply_defences(base, cfg.defences), cfg.output)
    guard = Guard(
        key=api_key, model_name=cfg.name or folder.resolve().name, rate_limit=cfg.rate_limit
    )
    qlog = QueryLog(cfg.query_log) if cfg.query_log else None
    state = {"ready": False}
    output = cfg.output

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(base.model)  # load once, before the first request
        state["ready"] = True
        log.info("serving %s as %r (output %s)", folder, guard.model_name, output)
        yield

    app = FastAPI(title="copycat target", version=__version__, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    def answer(x: torch.Tensor, request: Request, endpoint: str) -> Answer:
        with as_client(client_of(request)):  # defences keep their state per client
            try:
                ans = oracle.query(x)
            except QueryRefused as exc:  # a detector blocked this client
                raise ApiError(403, str(exc)) from exc
        if qlog is not None:
            qlog.write(
                client=client_of(request),
                endpoint=endpoint,
                model=guard.model_name,
                n_images=len(x),
            )
        return ans

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
    def metadata_route(model: str, request: Request) -> dict[str, Any]:
        guard(request, model)
        return model_metadata(base, cfg, guard.model_name)

    @app.get("/v2/models/{model}/ready")
    def model_ready(model: str, request: Request) -> dict[str, Any]:
        guard(request, model)
        return {"name": guard.model_name, "ready": state["ready"]}

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> dict[str, Any]:
        guard(request, model, costly=True)
        req: InferRequest = parse_body(
            await read_body(request, max_bytes=cfg.max_body_bytes), InferRequest
        )
        if len(req.inputs) != 1:
            raise ApiError(400, f"expected one input tensor (the images), got {len(req.inputs)}")
        inp = req.inputs[0]
        check_batch(inp.shape[0] if inp.shape else 0, max_batch=cfg.max_batch)
        x = await run_in_threadpool(decode_tensor, inp, base.input_shape)
        check_batch(len(x), max_batch=cfg.max_batch)
        ans = await run_in_threadpool(answer, x, request, "infer")
        outs = infer_outputs(ans, {o.name for o in req.outputs} if req.outputs else None)
        reply: dict[str, Any] = {
            "model_name": guard.model_name,
            "model_version": "1",
            "outputs": outs,
        }
        if req.id is not None:
            reply["id"] = req.id
        return reply

    @app.post("/predict", response_model=None)
    async def predict(request: Request) -> list[Any]:
        guard(request, costly=True)
        body = await read_body(request, max_bytes=cfg.max_body_bytes)
        single = request.headers.get("content-type", "").startswith("image/")
        images = (
            [base64.b64encode(body).decode()] if single else parse_body(body, PredictRequest).images
        )
        check_batch(len(images), max_batch=cfg.max_batch)
        shape = base.input_shape

        def decode() -> torch.Tensor:
            return (
                torch.stack([decode_image(s, shape, i) for i, s in enumerate(images)]).float() / 255
            )

        x = await run_in_threadpool(decode)
        ans = await run_in_threadpool(answer, x, request, "predict")
        rows = predict_rows(ans, base.card.class_names)
        return rows[0] if single else rows

    if faults is not None:
        log.warning("fault injection is on (test only): %s", faults)
        return FaultInjector(app, faults)
    return app


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


def infer_outputs(ans: Answer, wanted: set[str] | None) -> list[dict[str, Any]]:
    """The OIP output tensors of an answer, restricted to the ``wanted`` names if given."""
    n = len(ans.labels)
    outs = [{"name": "label", "datatype": "INT64", "shape": [n], "data": ans.labels.tolist()}]
    if ans.probs is not None:
        k = ans.probs.shape[1]
        data = ans.probs.ravel().tolist()
        outs.append({"name": "probs", "datatype": "FP32", "shape": [n, k], "data": data})
    if wanted:
        unknown = wanted - {o["name"] for o in outs}
        if unknown:
            raise ApiError(400, f"unknown outputs {sorted(unknown)}; this model has label, probs")
        outs = [o for o in outs if o["name"] in wanted]
    return outs


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
    if cfg.host not in LOOPBACK and api_key is None:
        log.warning(
            "serving on %s without an API key: anyone who can reach it may query it", cfg.host
        )
    app = create_app(model, config=cfg, api_key=api_key, faults=faults)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=False)
