"""The Open Inference Protocol's binary tensor data extension, the server's side.

A request with the ``Inference-Header-Content-Length: L`` header is a JSON header of ``L`` bytes
followed by raw tensor bytes: each input whose ``parameters.binary_data_size`` is set takes that
many bytes, in input order (numbers little-endian; BYTES elements each a 4-byte little-endian
length, then the bytes). A reply carries an output as raw bytes when the request asks for it
(``parameters.binary_data`` on the output, or ``binary_data_output`` on the request), with the
same header. Every size is checked against the body before any tensor is read.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse, Response

from copycat.serve.decode import InferInput, InferRequest
from copycat.serve.guards import ApiError, parse_body

HEADER = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body; the whole body is JSON without the header."""
    if header_length is None:
        return body, b""
    value = header_length.strip()
    if not value.isdigit() or int(value) < 1:
        raise ApiError(400, f"{HEADER} is {header_length!r}; expected a positive byte count")
    n = int(value)
    if n > len(body):
        raise ApiError(
            400,
            f"{HEADER} says the JSON header is {n} bytes but the body has only {len(body)}; "
            "send the header's exact length",
        )
    return body[:n], body[n:]


def read_request(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes | None]:
    """The request and its one input's raw bytes (None when it came as JSON ``data``)."""
    head, tail = split_body(body, header_length)
    try:
        req: InferRequest = parse_body(head, InferRequest)
    except ApiError as exc:
        if header_length is None and "trailing characters" in exc.message:
            exc.message += f"; binary tensors after the JSON need the {HEADER} header"
        raise
    if len(req.inputs) != 1:
        raise ApiError(400, f"expected one input tensor (the images), got {len(req.inputs)}")
    return req, binary_inputs(req.inputs, tail)[0]


def _binary_size(inp: InferInput) -> int | None:
    size = (inp.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ApiError(400, f"input {inp.name!r}: binary_data_size {size!r} is not a byte count")
    return size


def binary_inputs(inputs: list[InferInput], tail: bytes) -> list[bytes | None]:
    """Each input's raw bytes (None for JSON ``data``), sliced from ``tail`` in input order;
    a 400 unless the declared sizes account for the tail exactly."""
    out: list[bytes | None] = []
    offset = 0
    for inp in inputs:
        size = _binary_size(inp)
        if size is None:
            if inp.data is None:
                raise ApiError(
                    400, f"input {inp.name!r} has neither 'data' nor parameters.binary_data_size"
                )
            out.append(None)
            continue
        if inp.data is not None:
            raise ApiError(400, f"input {inp.name!r} has both 'data' and binary_data_size")
        if offset + size > len(tail):
            raise ApiError(
                400,
                f"input {inp.name!r} declares binary_data_size {size} but only "
                f"{len(tail) - offset} bytes follow the JSON header",
            )
        out.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise ApiError(
            400,
            f"{len(tail) - offset} bytes follow the JSON header beyond the inputs' "
            f"binary_data_size ({offset} bytes declared); check {HEADER} and the sizes",
        )
    return out


def binary_wanted(req: InferRequest) -> dict[str, bool]:
    """Per requested output name, whether it goes back as binary (``""``: the default for
    outputs not named, from the request's ``binary_data_output``)."""
    default = (req.parameters or {}).get("binary_data_output", False)
    wanted: dict[str, bool] = {"": default is True}
    for out in req.outputs or []:
        params = out.parameters or {}
        if "classification" in params:
            raise ApiError(400, "the classification extension is not supported; ask for probs")
        flag = params.get("binary_data", default)
        wanted[out.name] = flag is True
    return wanted


def reply(header: dict[str, Any], arrays: dict[str, np.ndarray], binary: dict[str, bool]) -> Any:
    """The inference reply: outputs listed in ``header["outputs"]`` get their ``arrays`` as JSON
    ``data`` or, where ``binary`` says so, as raw little-endian bytes after the JSON header."""
    blobs: list[bytes] = []
    for out in header["outputs"]:
        arr = arrays[out["name"]]
        if binary.get(out["name"], binary.get("", False)):
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = arr.ravel().tolist()
    if not blobs:
        return JSONResponse(header)
    head = json.dumps(header, separators=(",", ":")).encode()
    return Response(
        head + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER: str(len(head))},
    )
