"""Request bodies and their decoding into image tensors, counted and bounded before any pixel is
decoded.

:func:`plan_images` reads an input tensor's declared shape, or the headers of its PNG/JPEG
images, and checks the batch and pixel limits; only then does the :class:`Planned` decoder it
returns touch pixel data. Tensors arrive as JSON ``data`` or as raw little-endian bytes (the
binary tensor data extension, split off by :mod:`copycat.serve.wire`).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from copycat.data.imageio import PIXEL_SLACK, fit_to_shape
from copycat.serve.guards import ApiError, check_batch

MAX_IMAGE_PIXELS = 4096 * 4096
MAX_SIDE = 2048
# Binary tensors: little-endian, as the extension specifies.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "UINT8": np.dtype("u1"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: Any = None  # absent when the tensor travels as binary data
    parameters: dict[str, Any] | None = None


class InferOutputRequest(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput]
    outputs: list[InferOutputRequest] | None = None
    parameters: dict[str, Any] | None = None


class PredictRequest(BaseModel):
    images: list[str]


@dataclass(frozen=True, slots=True)
class Planned:
    """A request's images, counted and bounded: ``decode()`` gives (N, C, H, W) float in [0, 1]."""

    n_images: int
    pixels: int
    decode: Callable[[], torch.Tensor]


def image_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None for anything else."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and len(raw) >= 24:
        w, h = struct.unpack(">II", raw[16:24])
        return int(w), int(h)
    if raw[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(raw):  # walk the JPEG markers up to a start-of-frame
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", raw[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > len(raw):
                return None
            h, w = struct.unpack(">HH", raw[i + 5 : i + 9])
            return int(w), int(h)
        if length < 2:
            return None
        i += 2 + length
    return None


def check_pixels(pixels: int, n: int, *, max_pixels: int) -> None:
    if pixels > max_pixels:
        raise ApiError(
            413,
            f"the {n} images of this request hold {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} per request; send fewer or smaller images (or raise "
            "--max-request-mp on the server)",
        )


def decode_image(raw: bytes, shape: tuple[int, int, int], i: int) -> torch.Tensor:
    """PNG/JPEG bytes (header already checked) as a (C, H, W) uint8 tensor fitted to ``shape``."""
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG", "JPEG"]) as im:
            if im.size != image_size(raw):  # e.g. a second JPEG frame header, larger than the first
                raise ApiError(400, f"image {i} declares two sizes ({im.size}, {image_size(raw)})")
            im.load()
            return fit_to_shape(im.convert("RGB"), shape)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ApiError(400, f"image {i} is not a valid PNG/JPEG image ({exc})") from exc


def plan_encoded(
    blobs: list[bytes], shape: tuple[int, int, int], *, max_batch: int, max_pixels: int
) -> Planned:
    """PNG/JPEG images: counted, and their pixels summed from their headers, before decoding."""
    check_batch(len(blobs), max_batch=max_batch)
    total = 0
    for i, raw in enumerate(blobs):
        size = image_size(raw)
        if size is None:
            raise ApiError(400, f"image {i} is not a PNG/JPEG image (unrecognised header)")
        w, h = size
        if w < 1 or h < 1 or w * h > MAX_IMAGE_PIXELS:
            raise ApiError(413, f"image {i} is {w}x{h} pixels; at most {MAX_IMAGE_PIXELS:,}")
        total += w * h
    check_pixels(total, len(blobs), max_pixels=max_pixels)

    def decode() -> torch.Tensor:
        return torch.stack([decode_image(b, shape, i) for i, b in enumerate(blobs)]).float() / 255

    return Planned(len(blobs), total, decode)


def b64_items(data: Any, *, limit: int) -> list[bytes]:
    """JSON BYTES data (base64 strings, nested lists allowed) as raw bytes; counted first."""
    items = np.asarray(data, dtype=object).ravel().tolist() if data is not None else []
    check_batch(len(items), max_batch=limit)
    if not all(isinstance(s, str) for s in items):
        raise ApiError(400, "BYTES data must be base64 strings holding PNG/JPEG images")
    out = []
    for i, s in enumerate(items):
        try:
            out.append(base64.b64decode(s, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ApiError(400, f"image {i} is not valid base64 ({exc})") from exc
    return out


def bytes_elements(raw: bytes, *, limit: int) -> list[bytes]:
    """A binary BYTES tensor: each element a 4-byte little-endian length, then its bytes.
    Stops with a 413 past ``limit`` elements, before reading the rest."""
    out: list[bytes] = []
    i = 0
    while i < len(raw):
        if len(out) == limit:
            raise ApiError(
                413, f"batch of more than {limit} images exceeds the limit of {limit}; split it"
            )
        if i + 4 > len(raw):
            raise ApiError(400, f"BYTES element {len(out)} is cut short (a 4-byte length needed)")
        (n,) = struct.unpack("<I", raw[i : i + 4])
        if i + 4 + n > len(raw):
            raise ApiError(
                400, f"BYTES element {len(out)} declares {n} bytes; {len(raw) - i - 4} remain"
            )
        out.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def plan_images(
    inp: InferInput,
    raw: bytes | None,
    shape: tuple[int, int, int],
    *,
    max_batch: int,
    max_pixels: int,
) -> Planned:
    """Count and bound the images of one OIP input tensor (JSON ``data``, or ``raw`` binary
    bytes); the returned decoder gives (N, C, H, W) float32 in [0, 1]."""
    dt = inp.datatype.upper()
    if dt == "BYTES":
        if raw is None:
            blobs = b64_items(inp.data, limit=max_batch)
        else:
            blobs = bytes_elements(raw, limit=max_batch)
        if math.prod(inp.shape) != len(blobs) or not inp.shape:
            raise ApiError(400, f"input shape {inp.shape} does not match its {len(blobs)} images")
        return plan_encoded(blobs, shape, max_batch=max_batch, max_pixels=max_pixels)
    if dt not in NUMPY_DTYPES:
        raise ApiError(400, f"datatype {inp.datatype!r} is not accepted; use UINT8, FP32 or BYTES")
    if len(inp.shape) != 4 or inp.shape[1] != shape[0]:
        raise ApiError(400, f"input shape {inp.shape} is invalid; expected [N, {shape[0]}, H, W]")
    if any(d < 1 for d in inp.shape[1:]) or max(inp.shape[2:]) > MAX_SIDE:
        raise ApiError(400, f"input shape {inp.shape} is invalid; sides must be 1..{MAX_SIDE}")
    n, _, h, w = inp.shape
    check_batch(n, max_batch=max_batch)
    check_pixels(n * h * w, n, max_pixels=max_pixels)
    if raw is not None:
        want = math.prod(inp.shape) * NUMPY_DTYPES[dt].itemsize
        if len(raw) != want:
            raise ApiError(
                400,
                f"binary_data_size is {len(raw)} bytes; shape {inp.shape} of {dt} needs {want}",
            )
    return Planned(n, n * h * w, lambda: decode_numbers(inp, raw, dt))


def decode_numbers(inp: InferInput, raw: bytes | None, dt: str) -> torch.Tensor:
    """A UINT8 or FP32/FP64 tensor (JSON numbers or raw bytes) as (N, C, H, W) float32."""
    if raw is not None:
        arr = np.frombuffer(raw, dtype=NUMPY_DTYPES[dt])
    else:
        try:
            arr = np.asarray(inp.data, dtype=np.float64 if dt != "UINT8" else None)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"input data is not a numeric array ({exc})") from exc
        if arr.size != math.prod(inp.shape):
            raise ApiError(
                400, f"input has {arr.size} values; shape {inp.shape} needs {math.prod(inp.shape)}"
            )
        if dt == "UINT8" and (
            arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 255))
        ):
            raise ApiError(400, "UINT8 data must be integers in 0..255")
    if dt == "UINT8":
        return torch.from_numpy(arr.astype(np.float32).reshape(inp.shape)) / 255.0
    if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
        raise ApiError(400, "FP32 data must be finite numbers (images in [0, 1])")
    if arr.size and (arr.min() < -PIXEL_SLACK or arr.max() > 1.0 + PIXEL_SLACK):
        raise ApiError(
            400,
            f"FP32 data must be images in [0, 1], got {arr.min():.3g} to {arr.max():.3g}; "
            "divide 0..255 pixels by 255 or send UINT8",
        )
    return torch.from_numpy(arr.astype(np.float32).reshape(inp.shape))
