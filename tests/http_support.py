"""Helpers for the HTTP tests: a tiny seeded target and real servers on 127.0.0.1.

Servers run in subprocesses (``python -m copycat.cli serve --port 0``); the bound port is read
from uvicorn's log, so no port is ever guessed, and every server is torn down in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

import copycat
from copycat.config import TrainConfig
from copycat.data.datasets import LabelledSet

SRC = Path(copycat.__file__).resolve().parents[1]
_TARGET: dict[str, Path] = {}


def synthetic_set(n: int, *, seed: int) -> LabelledSet:
    """1x28x28 uint8 images whose label (0..3) is the brightest quadrant: learnable, seeded."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (n,), generator=g)
    for i, lab in enumerate(labels.tolist()):
        r, c = divmod(lab, 2)
        images[i, 0, r * 14 : r * 14 + 14, c * 14 : c * 14 + 14] += 150
    return LabelledSet(images, labels, ("tl", "tr", "bl", "br"), "quadrants")


def tiny_target(root: Path) -> Path:
    """A target folder trained once per test session (a few seconds on one core)."""
    if "dir" not in _TARGET:
        from copycat.targets.publish import train_target

        out = root / "quad"
        cfg = TrainConfig(arch="cnn-tiny", epochs=1, device="cpu", batch_size=64)
        train_target(synthetic_set(512, seed=0), synthetic_set(128, seed=1), out=out, config=cfg)
        _TARGET["dir"] = out
    return _TARGET["dir"]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    query_log: Path

    def served_images(self) -> int:
        if not self.query_log.is_file():
            return 0
        return sum(json.loads(ln)["n_images"] for ln in self.query_log.read_text().splitlines())


def env_with_src(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


@contextmanager
def running_server(
    target: Path, workdir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``copycat serve --model target --port 0 ARGS`` until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    qlog = workdir / "query_log.jsonl"
    cmd = [sys.executable, "-m", "copycat.cli", "serve", "--model", str(target), "--port", "0"]
    cmd += ["--query-log", str(qlog), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env or env_with_src()
        )
    try:
        url = _wait_for_url(proc, log)
        yield Server(url=url, proc=proc, log=log, query_log=qlog)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for_url(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        m = pattern.search(text)
        if m:
            url = m.group(1)
            for _ in range(100):
                try:
                    if httpx.get(url + "/v2/health/ready", timeout=2).json().get("ready"):
                        return url
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"server did not start in {timeout} s:\n{log.read_text()[-3000:]}")
