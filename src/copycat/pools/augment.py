"""Query-time augmentation: one batched affine resample (crop, aspect, rotation, flips), then
photometric jitter, all drawn from an explicit generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from copycat.config import AugmentConfig


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] → uint8, rounding; what is sent is exactly what is stored."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Float images (N, C, S, S) resized to (N, C, h, w), antialiased: an image sent whole."""
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


# RGB to YIQ (NTSC): Y is luma, the angle of (I, Q) is hue and its length saturation.
_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)


def colour_jitter(x: torch.Tensor, *, turn: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """RGB images (N, 3, H, W) in [0, 1] with each hue turned by ``turn`` (N,) of the colour
    circle and saturation scaled by ``scale`` (N,): one 3x3 colour matrix per image, applied
    in YIQ space so luma is kept; clamped to [0, 1]."""
    ang = 2 * math.pi * turn
    cos, sin = ang.cos() * scale, ang.sin() * scale
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack(
        [
            torch.stack([one, zero, zero], 1),
            torch.stack([zero, cos, sin], 1),
            torch.stack([zero, -sin, cos], 1),
        ],
        1,
    )  # (N, 3, 3) on (Y, I, Q), turning as HSV's hue does: red, then green, then blue
    yiq = _YIQ.to(x.device, x.dtype)
    m = torch.linalg.inv(yiq) @ rot.to(x.device, x.dtype) @ yiq
    return torch.einsum("nij,njhw->nihw", m, x).clamp_(0.0, 1.0)


def augment_batch(
    base: torch.Tensor, shape: tuple[int, int, int], cfg: AugmentConfig, gen: torch.Generator
) -> torch.Tensor:
    """Random resized crop, rotation and flips in one batched affine resample, then photometric
    jitter (brightness, contrast, and for colour images hue and saturation); a ``cfg.whole``
    share of the images is sent whole instead (only resized). ``base`` is float (N, C, S, S) in
    [0, 1]; returns float (N, C, H, W) in [0, 1]."""
    n, _, h, w = base.shape[0], *shape
    if not cfg.enabled:
        return resize(base, h, w)
    u = torch.rand(n, 8, generator=gen)
    if cfg.invert > 0:
        flip = (u[:, 0] < cfg.invert).view(n, 1, 1, 1)
        base = torch.where(flip, 1.0 - base, base)
    lo, hi = cfg.scale
    area = lo + (hi - lo) * u[:, 1]
    alo, ahi = math.log(cfg.aspect[0]), math.log(cfg.aspect[1])
    log_r = alo + (ahi - alo) * u[:, 2]
    sx = (area * log_r.exp()).sqrt().clamp(max=1.0)
    sy = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (1 - sx) * (2 * u[:, 3] - 1)
    cy = (1 - sy) * (2 * u[:, 4] - 1)
    ang = math.radians(cfg.rotation) * (2 * u[:, 5] - 1)
    hflip = torch.where(u[:, 6] < cfg.hflip, -1.0, 1.0)
    vflip = torch.where(u[:, 7] < cfg.vflip, -1.0, 1.0)
    cos, sin = ang.cos(), ang.sin()
    theta = torch.stack(
        [
            torch.stack([cos * sx * hflip, -sin * sy * vflip, cx], 1),
            torch.stack([sin * sx * hflip, cos * sy * vflip, cy], 1),
        ],
        1,
    )
    # Shrink first so the bilinear resample does not alias fine detail.
    side = max(h, w)
    if base.shape[-1] > 2 * side:
        base = F.interpolate(base, size=(2 * side, 2 * side), mode="area")
    grid = F.affine_grid(theta, [n, base.shape[1], h, w], align_corners=False)
    out = F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    v = torch.rand(n, 2, generator=gen)
    bright = 1 + cfg.brightness * (2 * v[:, 0] - 1)
    contrast = 1 + cfg.contrast * (2 * v[:, 1] - 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.view(n, 1, 1, 1) + mean
    out = (out * bright.view(n, 1, 1, 1)).clamp_(0.0, 1.0)
    if out.shape[1] == 3 and (cfg.hue > 0 or cfg.saturation > 0):
        # drawn only then, so grey pools and the default draw exactly as before
        c = torch.rand(n, 2, generator=gen)
        out = colour_jitter(
            out, turn=cfg.hue * (2 * c[:, 0] - 1), scale=1 + cfg.saturation * (2 * c[:, 1] - 1)
        )
    if cfg.whole > 0:  # drawn only then, so the other images' draws stay as before
        keep = (torch.rand(n, generator=gen) < cfg.whole).view(n, 1, 1, 1)
        out = torch.where(keep, resize(base, h, w), out)
    return out
