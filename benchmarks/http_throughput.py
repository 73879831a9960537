"""Queries per second through copycat's OIP oracle vs a bare httpx loop, same local server.

    PYTHONPATH=src python benchmarks/http_throughput.py [--seconds 3] [--target DIR]

Starts ``copycat serve`` on 127.0.0.1 (a free port, no query log), then for each request batch
(1, 32, 256 images) and concurrency (1, 4, 16) measures images answered per second (best of
alternating runs, since the machine's load varies) by

- bare: ``concurrency`` threads posting one pre-encoded UINT8 request in a loop (httpx.Client);
- copycat: ``OipOracle.query`` on float batches of ``4 * batch * concurrency`` images, which
  encodes every request, paces, retries if needed, parses and reassembles the answers.

Prints a markdown table and writes benchmarks/results/http_throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

import copycat
from copycat.config import TrainConfig
from copycat.data.datasets import LabelledSet
from copycat.oracles.http import build_http_oracle

RESULTS = Path(__file__).resolve().parent / "results"


def tiny_target(out: Path) -> Path:
    from copycat.targets.publish import train_target

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (256,), generator=g)
    data = LabelledSet(images, labels, tuple(str(i) for i in range(10)), "noise")
    cfg = TrainConfig(arch="cnn-tiny", epochs=1, device="cpu")
    train_target(data, data, out=out, config=cfg)
    return out


def start_server(target: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(copycat.__file__).resolve().parents[1])
    cmd = [sys.executable, "-m", "copycat.cli", "serve", "--model", str(target), "--port", "0"]
    cmd += ["--query-log", "", "--max-batch", "256"]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    for _ in range(1200):
        m = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()[-2000:]}")


def bare(url: str, batch: int, concurrency: int, seconds: float) -> float:
    x = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
    tensor = {"name": "images", "shape": list(x.shape), "datatype": "UINT8"}
    body = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    headers = {"Content-Type": "application/json"}
    done = [0] * concurrency
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits, timeout=60) as client:
        client.post(url, content=body, headers=headers).raise_for_status()  # warm up
        end = time.perf_counter() + seconds

        def loop(i: int) -> None:
            while time.perf_counter() < end:
                r = client.post(url, content=body, headers=headers)
                r.raise_for_status()
                r.json()
                done[i] += batch

        t0 = time.perf_counter()
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) / (time.perf_counter() - t0)


def pipeline(spec: str, batch: int, concurrency: int, seconds: float) -> float:
    oracle = build_http_oracle(spec, concurrency=concurrency, request_batch=batch)
    x = torch.randint(0, 256, (4 * batch * concurrency, 1, 28, 28)).float() / 255
    oracle.query(x[:batch])  # warm up: metadata, connections, threads
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(oracle.query(x).labels)
    rate = n / (time.perf_counter() - t0)
    oracle.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    ap.add_argument("--target", type=Path, default=None, help="target folder (default: tiny)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs; best is kept")
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--concurrency", default="1,4,16")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        target = args.target or tiny_target(Path(tmp) / "bench")
        proc, url = start_server(target, Path(tmp) / "server.log")
        name = json.loads((target / "card.json").read_text())["name"]
        try:
            time.sleep(1.0)
            infer = f"{url}/v2/models/{Path(target).resolve().name}/infer"
            spec = f"oip+{url}/v2/models/{Path(target).resolve().name}"
            rows = []
            for b in (int(v) for v in args.batches.split(",")):
                for c in (int(v) for v in args.concurrency.split(",")):
                    qb = qp = 0.0
                    for _ in range(args.repeats):  # alternate; best of each, as load varies
                        qb = max(qb, bare(infer, b, c, args.seconds))
                        qp = max(qp, pipeline(spec, b, c, args.seconds))
                    rows.append({"batch": b, "concurrency": c, "bare_qps": qb, "copycat_qps": qp})
                    print(f"batch {b:>3} concurrency {c:>2}: bare {qb:8.0f}  copycat {qp:8.0f}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    lines = [
        f"HTTP oracle throughput (images/s) vs a bare httpx loop; target {name} (cnn-tiny),",
        f"copycat serve on 127.0.0.1, {os.cpu_count()} CPU cores shared by server and client,",
        f"best of {args.repeats} alternating runs of {args.seconds:g} s per cell.",
        "",
        "| batch | concurrency | bare httpx (img/s) | copycat oracle (img/s) | ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["copycat_qps"] / r["bare_qps"]
        r["ratio"] = ratio
        lines.append(
            f"| {r['batch']} | {r['concurrency']} | {r['bare_qps']:.0f} | "
            f"{r['copycat_qps']:.0f} | {ratio:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http_throughput.md").write_text(table)
    (RESULTS / "http_throughput.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
