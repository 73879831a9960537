"""Bounded, defensive image decoding shared by pools and ImageFolder test sets.

Every file goes through :func:`decode_image`, which refuses decompression bombs by their header
before decoding, normalises every PIL mode (palette, RGBA, CMYK, 16-bit, ...) to RGB and turns
every decoder failure into :class:`ImageDecodeError`, so callers can skip and count it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
# Float pixels may stray this far outside [0, 1] (rounding) before a batch is refused as 0..255
# values; the oracles (check_images) and the server (decode_numbers) share it.
PIXEL_SLACK = 0.01
# Pillow's process-wide guard (Image.MAX_IMAGE_PIXELS) is left as the application set it: our
# bound is the header check in decode_image, and a file beyond Pillow's own limit is refused by
# Pillow first; both are reported as "too large".


class ImageDecodeError(Exception):
    """A file could not be used as an image (corrupt, empty, not an image, too large)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _to_rgba_or_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        arr = arr * (255.0 / hi) if hi > 255 else arr
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        return img.convert("RGBA")
    if img.mode == "CMYK":
        return img.convert("RGB")
    return img.convert("RGB")


def decode_image(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = 512,
    background: int | None = 0,
) -> Image.Image:
    """Decode ``path`` to an RGB image no larger than ``max_side`` on its long side.

    Transparent pixels are composited onto a grey level ``background`` (0 = black); with
    ``background=None`` an image with transparency is returned as RGBA. Raises
    :class:`ImageDecodeError` with a short reason (``empty``, ``not an image``, ``too large``,
    ``corrupt``) instead of any decoder exception.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageDecodeError("empty", str(p))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageDecodeError("too large", f"{w}x{h} pixels > {max_pixels}")
                if w == 0 or h == 0:
                    raise ImageDecodeError("empty", f"{w}x{h}")
                # JPEG can decode at reduced scale straight away, bounding time and memory.
                im.draft("RGB", (max_side, max_side))
                im.seek(0)
                im.load()
                img = _to_rgba_or_rgb(ImageOps.exif_transpose(im) or im)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too large", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image", str(exc)) from exc
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        MemoryError,
    ) as exc:
        raise ImageDecodeError("corrupt", f"{type(exc).__name__}: {exc}") from exc
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if img.mode == "RGBA" and background is not None:
        bg = Image.new("RGB", img.size, (background,) * 3)
        bg.paste(img, mask=img.getchannel("A"))
        img = bg
    return img


def fit_to_shape(img: Image.Image, shape: tuple[int, int, int]) -> torch.Tensor:
    """Centre-crop to the aspect of ``shape`` (C, H, W), resize, convert channels.

    Returns a ``uint8`` tensor of shape ``shape``.
    """
    c, h, w = shape
    img = ImageOps.fit(img, (w, h), Image.Resampling.BILINEAR)
    return pil_to_tensor(img, channels=c)


def pil_to_tensor(img: Image.Image, *, channels: int) -> torch.Tensor:
    """An RGB/L PIL image as a (C, H, W) ``uint8`` tensor with ``channels`` channels (1 or 3)."""
    if channels == 1:
        arr = np.asarray(img.convert("L"), dtype=np.uint8)[None]
    elif channels == 3:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    else:
        raise ValueError(f"unsupported channel count {channels}; targets take 1 or 3 channels")
    return torch.from_numpy(arr.copy())
