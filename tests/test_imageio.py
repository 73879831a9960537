"""Importing and using copycat leaves Pillow's process-wide decompression-bomb guard alone;
bombs are still refused by their header, skipped and counted."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

from copycat.config import PoolConfig
from copycat.pools.pool import build_pool

from .http_support import env_with_src


def _claimed_size_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    Image.new("L", (8, 8)).save(path)
    raw = bytearray(path.read_bytes())
    ihdr = raw[12:29]  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))


def test_pillow_guard_is_unchanged_after_using_the_pools(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "ok.png")
    code = f"""
from PIL import Image
default = Image.MAX_IMAGE_PIXELS
import copycat, copycat.data.imageio, copycat.pools.pool, copycat.cli.main
from copycat.config import PoolConfig
pool = copycat.pools.pool.build_pool(PoolConfig(spec="folder:{tmp_path}"), shape=(1, 28, 28))
next(pool.batches(4))
assert Image.MAX_IMAGE_PIXELS == default, (Image.MAX_IMAGE_PIXELS, default)
print("unchanged", default)
"""
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_with_src()
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "unchanged" in res.stdout


def test_bombs_beyond_either_bound_are_skipped_as_too_large(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "ok.png")
    _claimed_size_png(tmp_path / "ours.png", 8_000, 6_000)  # 48 MP: over our 40 MP bound
    _claimed_size_png(tmp_path / "pillows.png", 20_000, 20_000)  # 400 MP: over Pillow's too
    pool = build_pool(
        PoolConfig(spec=f"folder:{tmp_path}", max_pixels=1_000_000_000), shape=(1, 28, 28)
    )
    next(pool.batches(8))
    assert pool.skipped == {"too large": 1, "corrupt": 1}  # ours.png is under 1 GP: corrupt
    pool = build_pool(PoolConfig(spec=f"folder:{tmp_path}"), shape=(1, 28, 28))
    next(pool.batches(8))
    assert pool.skipped == {"too large": 2}
