"""Request bodies and their decoding into image tensors, bounded before any pixel is decoded."""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from copycat.data.imageio import fit_to_shape
from copycat.serve.guards import ApiError

MAX_IMAGE_PIXELS = 4096 * 4096
MAX_SIDE = 2048


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


def decode_image(b64: str, shape: tuple[int, int, int], i: int) -> torch.Tensor:
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


def decode_tensor(inp: InferInput, shape: tuple[int, int, int]) -> torch.Tensor:
    """An OIP input tensor as (N, C, H, W) float in [0, 1]."""
    dt = inp.datatype.upper()
    if dt == "BYTES":
        items = np.asarray(inp.data, dtype=object).ravel().tolist()
        if not all(isinstance(s, str) for s in items):
            raise ApiError(400, "BYTES data must be base64 strings holding PNG/JPEG images")
        return torch.stack([decode_image(s, shape, i) for i, s in enumerate(items)]).float() / 255
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
