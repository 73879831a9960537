"""Images/s through copycat's OIP oracle and a whole steal vs a bare httpx loop, JSON vs binary
tensors, at 28x28x1 and 224x224x3, against a local ``copycat serve``.

    PYTHONPATH=src python benchmarks/http_throughput.py [--seconds 3] [--repeats 2]

For each input size a tiny target is trained in the script (cnn-tiny, one epoch on seeded
random images: the model's speed is not the point, the wire is) and served on 127.0.0.1 (a free
port, no query log, 64 MiB bodies). Then, for each encoding (``json``: UINT8 numbers in JSON;
``binary``: the binary tensor data extension, raw bytes both ways), with ``--batch`` images per
request and ``--concurrency`` requests in flight, it measures images answered per second by

- bare: threads posting one pre-encoded request in a loop (httpx.Client), reading the reply;
- oracle: ``OipOracle.query`` with ``--send-as json`` or ``auto`` (the default, which must find
  the server's ``binary_tensor_data`` extension) on float batches of ``2 * batch *
  concurrency`` images: encodes every request, parses and reassembles answers;
- steal: the whole query stage (``copycat.steal.loop.steal``: noise pool, content hashing, the
  SQLite answer store; steal batches of ``batch * concurrency``) through the same oracle, for
  about ``--seconds`` worth of images and at least three batches;

and the request and reply body bytes per image that the oracle put on the wire (httpx event
hooks; headers not counted). Each cell is the best of ``--repeats`` alternating runs, since the
machine's load varies. Prints a markdown table; writes benchmarks/results/http_throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

import common
import copycat
from copycat.config import AugmentConfig, PoolConfig, StealConfig, TrainConfig
from copycat.data.datasets import LabelledSet
from copycat.oracles.http import build_http_oracle
from copycat.pools.pool import build_pool
from copycat.steal.loop import steal
from copycat.steal.store import AnswerStore

RESULTS = Path(__file__).resolve().parent / "results"
HEADER = "Inference-Header-Content-Length"
SIZES = {"28x28x1": (1, 28, 28), "224x224x3": (3, 224, 224)}


def tiny_target(out: Path, shape: tuple[int, int, int]) -> Path:
    from copycat.targets.publish import train_target

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (128, *shape), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (128,), generator=g)
    data = LabelledSet(images, labels, tuple(str(i) for i in range(10)), "noise")
    cfg = TrainConfig(arch="cnn-tiny", epochs=1, device="cpu", batch_size=64)
    train_target(data, data, out=out, config=cfg)
    return out


def start_server(target: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    args = ["--query-log", "", "--max-batch", "256", "--max-body-mb", "64", "--output", "probs"]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(copycat.__file__).resolve().parents[1])
    return common.start_serve(target, log, args, env=env)


def encode(x: np.ndarray, how: str) -> tuple[bytes, dict[str, str]]:
    """One UINT8 request as JSON numbers or as a binary tensor (all outputs asked as binary)."""
    tensor: dict[str, Any] = {"name": "images", "shape": list(x.shape), "datatype": "UINT8"}
    if how == "json":
        body = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
        return body, {"Content-Type": "application/json"}
    raw = x.tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return head + raw, {"Content-Type": "application/octet-stream", HEADER: str(len(head))}


def read(r: httpx.Response) -> Any:
    """The reply's outputs as arrays (the least a client must do with either encoding)."""
    r.raise_for_status()
    if HEADER not in r.headers:
        return [np.asarray(o["data"]) for o in r.json()["outputs"]]
    n = int(r.headers[HEADER])
    head, offset, out = json.loads(r.content[:n]), n, []
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = "<i8" if o["datatype"] == "INT64" else "<f4"
        out.append(np.frombuffer(r.content[offset : offset + size], dtype=dtype))
        offset += size
    return out


def bare(url: str, shape: tuple[int, ...], how: str, batch: int, conc: int, secs: float) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8)
    body, headers = encode(x, how)
    done = [0] * conc
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    with httpx.Client(limits=limits, timeout=120) as client:
        read(client.post(url, content=body, headers=headers))  # warm up
        end = time.perf_counter() + secs

        def loop(i: int) -> None:
            while time.perf_counter() < end:
                read(client.post(url, content=body, headers=headers))
                done[i] += batch

        t0 = time.perf_counter()
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) / (time.perf_counter() - t0)


def wire_meter(oracle: Any) -> dict[str, int]:
    """Counts the request and reply body bytes of ``oracle``'s httpx client."""
    seen = {"sent": 0, "received": 0}

    def on_request(request: httpx.Request) -> None:
        seen["sent"] += len(request.content)

    def on_response(response: httpx.Response) -> None:
        seen["received"] += int(response.headers.get("content-length", 0))

    oracle.transport.client.event_hooks = {"request": [on_request], "response": [on_response]}
    return seen


def through_oracle(
    spec: str, shape: tuple[int, ...], how: str, batch: int, conc: int, secs: float
) -> tuple[float, float, float]:
    """(images/s, request bytes/image, reply bytes/image) through ``OipOracle.query``."""
    send_as = "auto" if how == "binary" else how  # binary: the default must find the extension
    oracle: Any = build_http_oracle(
        spec, send_as=send_as, concurrency=conc, request_batch=batch, timeout=120.0
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2 * batch * conc, *shape), generator=g).float() / 255
    oracle.query(x[:batch])  # warm up: metadata, extensions, connections, threads
    assert oracle.binary == (how == "binary"), f"asked for {how}, sent binary={oracle.binary}"
    seen = wire_meter(oracle)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < secs:
        n += len(oracle.query(x).labels)
    rate = n / (time.perf_counter() - t0)
    oracle.close()
    return rate, seen["sent"] / n, seen["received"] / n


def through_steal(
    spec: str, shape: tuple[int, int, int], how: str, batch: int, conc: int, budget: int
) -> float:
    """Images/s of a whole steal of ``budget`` images (pool, hashing, store) over HTTP."""
    send_as = "auto" if how == "binary" else how
    oracle: Any = build_http_oracle(
        spec, send_as=send_as, concurrency=conc, request_batch=batch, timeout=120.0
    )
    pool = build_pool(PoolConfig(spec="noise", augment=AugmentConfig(enabled=False)), shape=shape)
    with tempfile.TemporaryDirectory() as tmp, AnswerStore(Path(tmp) / "a.sqlite") as store:
        cfg = StealConfig(budget=budget, batch_size=batch * conc, selection="random")
        t0 = time.perf_counter()
        summary = steal(oracle, pool, store, config=cfg)
        assert oracle.binary == (how == "binary"), f"asked for {how}, sent binary={oracle.binary}"
        rate = summary.answered / (time.perf_counter() - t0)
    oracle.close()
    return rate


def measure(args: argparse.Namespace, size: str, tmp: Path) -> list[dict[str, Any]]:
    shape = SIZES[size]
    target = tiny_target(tmp / f"t{shape[1]}", shape)
    proc, url = start_server(target, tmp / f"server{shape[1]}.log")
    rows = []
    try:
        time.sleep(1.0)
        infer = f"{url}/v2/models/{target.name}/infer"
        spec = f"oip+{url}/v2/models/{target.name}"
        b, c = args.batch, args.concurrency
        for how in ("json", "binary"):
            qb = qo = qs = 0.0
            sent = received = 0.0
            for _ in range(args.repeats):  # alternate; best of each, as load varies
                qb = max(qb, bare(infer, shape, how, b, c, args.seconds))
                rate, sent, received = through_oracle(spec, shape, how, b, c, args.seconds)
                qo = max(qo, rate)
                budget = max(3 * b * c, int(qo * args.seconds) // (b * c) * (b * c))
                qs = max(qs, through_steal(spec, shape, how, b, c, budget))
            row = {"size": size, "encoding": how, "batch": b, "concurrency": c}
            row |= {"bare_ips": qb, "oracle_ips": qo, "steal_ips": qs}
            row |= {"request_bytes_per_image": sent, "reply_bytes_per_image": received}
            rows.append(row)
            print(
                f"{size:>9} {how:>6}: bare {qb:7.0f}  oracle {qo:7.0f}  steal {qs:7.0f} img/s  "
                f"{sent:9.0f} B/img sent  {received:5.0f} B/img received",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "OIP throughput (images/s), JSON vs binary tensors, against `copycat serve` on 127.0.0.1 "
        f"({os.cpu_count()} CPU cores shared by server and client); cnn-tiny targets, "
        f"{args.batch} images per request, {args.concurrency} in flight, best of {args.repeats} "
        f"alternating runs of {args.seconds:g} s. Bytes: request / reply bodies per image.",
        "",
        "| input | encoding | bare httpx | copycat oracle | steal | oracle / bare | "
        "steal / bare | request B/img | reply B/img |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        r["oracle_ratio"] = r["oracle_ips"] / r["bare_ips"]
        r["steal_ratio"] = r["steal_ips"] / r["bare_ips"]
        lines.append(
            f"| {r['size']} | {r['encoding']} | {r['bare_ips']:.0f} | {r['oracle_ips']:.0f} | "
            f"{r['steal_ips']:.0f} | {r['oracle_ratio']:.2f} | {r['steal_ratio']:.2f} | "
            f"{r['request_bytes_per_image']:,.0f} | {r['reply_bytes_per_image']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs; best is kept")
    ap.add_argument("--batch", type=int, default=32, help="images per request")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            rows += measure(args, size, Path(tmp))
    text = table(rows, args)
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "http_throughput.md").write_text(text)
    (RESULTS / "http_throughput.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
