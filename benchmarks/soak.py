"""Soak test of the steal stage's accounting: ``kill -9`` at random moments, faults on.

    PYTHONPATH=src python benchmarks/soak.py [--budget 3000] [--kills 5] [--seed 0]

Starts ``copycat serve`` on 127.0.0.1 with fault injection (HTTP 500, 429 with Retry-After,
replies slower than the client's timeout, malformed 200 replies, connections cut mid-reply)
and its query log on, then runs ``copycat steal`` over HTTP against it, SIGKILLs it at a random
moment ``--kills`` times (each time after it has committed new answers), runs the same command
again after each kill, and lets the last run finish. It then compares three accounts:

- the server's query log: images the model answered (what a hosted API bills);
- the store (``answers.sqlite``): answers kept, and its request ledger (every attempt written
  before it is sent, closed with its outcome);
- the bounds the README promises: re-paid images at most those in flight at the kills, no
  answer paid and lost, the budget and ``--max-billed`` never exceeded.

The injector answers malformed and cut replies itself, without running the model, so they are
not in the server's query log, while the client must count them as billed (a real server would
bill them): the ledger's ``billed`` minus those equals the server's count, up to the requests
in flight at a kill that had not reached the server yet.

Prints markdown tables and writes benchmarks/results/soak.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import copycat
from copycat.config import TrainConfig
from copycat.data.datasets import LabelledSet

SRC = Path(copycat.__file__).resolve().parents[1]
FAULTS = {
    "seed": 1,
    "error500": 0.03,
    "error429": 0.03,
    "retry_after": 0.05,
    "slow": 0.01,
    "slow_seconds": 1.5,
    "malformed": 0.02,
    "drop": 0.02,
    "delay": 0.01,
}
DRAIN_S = 2.0  # after a kill, what the server still had in hand is answered (and logged)


def tiny_target(out: Path) -> Path:
    """A 4-class target whose label is the brightest quadrant (trained in seconds)."""
    from copycat.targets.publish import train_target

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 60, (512, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (512,), generator=g)
    for i, lab in enumerate(labels.tolist()):
        r, c = divmod(lab, 2)
        images[i, 0, r * 14 : r * 14 + 14, c * 14 : c * 14 + 14] += 150
    data = LabelledSet(images, labels, ("tl", "tr", "bl", "br"), "quadrants")
    train_target(data, data, out=out, config=TrainConfig(arch="cnn-tiny", epochs=1, device="cpu"))
    return out


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), e.get("PYTHONPATH", "")])
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def start_server(target: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    args = ["--query-log", str(work / "query_log.jsonl"), "--faults", json.dumps(FAULTS)]
    return common.start_serve(target, work / "server.log", args, env=env())


def served(work: Path) -> int:
    path = work / "query_log.jsonl"
    if not path.is_file():
        return 0
    return sum(json.loads(ln)["n_images"] for ln in path.read_text().splitlines() if ln)


def query(store: Path, sql: str) -> Any:
    if not store.is_file():
        return 0
    for _ in range(50):
        try:
            with sqlite3.connect(store, timeout=5) as c:
                return c.execute(sql).fetchone()[0] or 0
        except sqlite3.OperationalError:  # the table is not there yet
            time.sleep(0.05)
    return 0


def answered(store: Path) -> int:
    return int(query(store, "SELECT COUNT(*) FROM answers"))


def ledger_billed(store: Path) -> int:
    sql = (
        "SELECT SUM(images) FROM requests WHERE outcome IS NULL "
        "OR outcome NOT IN ('refused', 'unsent', 'failed')"
    )
    return int(query(store, sql))


def timeouts(store: Path) -> int:
    return int(query(store, "SELECT SUM(images) FROM requests WHERE outcome = 'timeout'"))


def kill_at_random(cmd: list[str], store: Path, rng: random.Random, max_wait: float) -> bool:
    """Run ``cmd``; once it has committed new answers, SIGKILL it after a random wait.
    False if it finished first."""
    before = answered(store)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while answered(store) <= before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, max_wait))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def lost_images(store: Path) -> int:
    """Images in a billed request whose answer the store does not hold at the end."""
    with sqlite3.connect(store) as c:
        kept = {r[0] for r in c.execute("SELECT id FROM answers")}
        paid: set[str] = set()
        for (ids,) in c.execute(
            "SELECT ids FROM requests WHERE outcome NOT IN ('refused', 'unsent', 'failed')"
        ):
            paid.update(ids.split(","))
    return len(paid - kept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=3000)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--max-billed", type=int, default=None, help="default: 1.2 x budget")
    p.add_argument("--max-wait", type=float, default=2.0, help="seconds, kill moment bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = p.parse_args()
    rng = random.Random(args.seed)
    max_billed = args.max_billed or int(args.budget * 1.2)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="copycat-soak-") as tmp:
        work = Path(tmp)
        target = tiny_target(work / "quad")
        server, url = start_server(target, work)
        run = work / "run"
        store = run / "answers.sqlite"
        cmd = [sys.executable, "-m", "copycat.cli", "steal", "--oracle"]
        cmd += [f"oip+{url}/v2/models/quad", "--run-dir", str(run), "--device", "cpu"]
        cmd += ["--pool", "noise", "--no-augment", "--selection", "random"]
        cmd += ["--budget", str(args.budget), "--batch-size", "64", "--request-batch", "8"]
        cmd += ["--concurrency", "4", "--timeout", "1.0", "--max-retries", "30"]
        cmd += ["--max-billed", str(max_billed), "--price-per-1000", "1.0"]
        kills: list[dict[str, Any]] = []
        try:
            for i in range(args.kills):
                if not kill_at_random(cmd, store, rng, args.max_wait):
                    print(f"run {i + 1} finished before its kill", file=sys.stderr)
                    break
                in_flight = int(
                    query(store, "SELECT SUM(images) FROM requests WHERE outcome IS NULL")
                )
                time.sleep(DRAIN_S)
                kills.append(
                    {
                        "kill": i + 1,
                        "answered": answered(store),
                        "in_flight": in_flight,
                        "server_billed": served(work),
                        "ledger_billed": ledger_billed(store),
                        "timeouts": timeouts(store),
                    }
                )
                print(kills[-1], file=sys.stderr)
            final = subprocess.run(cmd, env=env(), capture_output=True, timeout=600)
            time.sleep(DRAIN_S)
            if final.returncode != 0:
                raise SystemExit(f"the last run failed:\n{final.stderr.decode()[-3000:]}")
            server_billed = served(work)
            st = json.loads((run / "steal.json").read_text())
            lost = lost_images(store)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print_results(args, kills, st, server_billed, lost, max_billed, time.monotonic() - t0)


def print_results(
    args: argparse.Namespace,
    kills: list[dict[str, Any]],
    st: dict[str, Any],
    server_billed: int,
    lost: int,
    max_billed: int,
    seconds: float,
) -> None:
    tot = st["total"]
    killed = int(tot["killed_images"])
    unknown = killed + int(tot["timeout_images"])  # outcome unknowable to the client
    # as the server counts: the injector's malformed and cut replies never reach the model
    ledger_as_server = tot["billed_images"] - tot["malformed_images"] - tot["cut_images"]
    repaid = server_billed - tot["answered"]
    end = {
        "kill": "end",
        "answered": tot["answered"],
        "in_flight": 0,
        "server_billed": server_billed,
        "ledger_billed": tot["billed_images"],
        "timeouts": tot["timeout_images"],
    }
    rows, prev, segments_ok = [], {"server_billed": 0, "answered": 0, "timeouts": 0}, True
    for k in [*kills, end]:
        # paid and not stored since the previous kill: the answers in flight at this kill,
        # and timed-out requests the server may have answered after the client gave up
        paid_not_kept = (k["server_billed"] - k["answered"]) - (
            prev["server_billed"] - prev["answered"]
        )
        bound = k["in_flight"] + k["timeouts"] - prev["timeouts"]
        segments_ok &= paid_not_kept <= bound
        rows.append(
            [
                k["kill"],
                k["answered"],
                k["server_billed"],
                k["ledger_billed"],
                k["in_flight"],
                k["timeouts"] - prev["timeouts"],
                paid_not_kept,
                paid_not_kept <= bound,
            ]
        )
        prev = k
    per_kill = common.md_table(
        [
            "kill",
            "answered",
            "server billed",
            "ledger billed",
            "in flight at the kill",
            "timed out since the last kill",
            "billed, not stored, since the last kill",
            "<= in flight + timed out",
        ],
        rows,
    )
    ok_budget = all(k["answered"] <= args.budget for k in kills) and tot["answered"] <= args.budget
    ok_cap = max(server_billed, tot["billed_images"]) <= max_billed
    totals = common.md_table(
        ["", "images"],
        [
            ["budget", args.budget],
            ["--max-billed", max_billed],
            ["answered (stored)", tot["answered"]],
            ["billed, server's query log", server_billed],
            ["billed, store's ledger (upper bound)", tot["billed_images"]],
            ["  of which malformed 200 replies (never reach the model)", tot["malformed_images"]],
            ["  of which connections cut mid-reply (never reach the model)", tot["cut_images"]],
            [
                "  of which timeouts (the server may answer after the client gave up)",
                tot["timeout_images"],
            ],
            ["  of which in flight at a kill", killed],
            ["ledger billed as the server counts (minus malformed, cut)", ledger_as_server],
            ["re-paid (server billed - answered)", repaid],
            ["lost (billed, never stored at the end)", lost],
            ["max images in flight at a kill", max((k["in_flight"] for k in kills), default=0)],
        ],
    )
    checks = common.md_table(
        ["check", "holds"],
        [
            ["0 lost", lost == 0],
            ["each kill: billed, not stored <= in flight + timed out", segments_ok],
            ["re-paid <= in flight at the kills + timed out", 0 <= repaid <= unknown],
            [
                "ledger (as the server counts) - server billed in [0, in flight + timed out]",
                0 <= ledger_as_server - server_billed <= unknown,
            ],
            ["ledger billed >= server billed", tot["billed_images"] >= server_billed],
            [
                "ledger billed (as the server counts) == server billed",
                ledger_as_server == server_billed,
            ],
            ["budget never exceeded", ok_budget],
            ["--max-billed never exceeded", ok_cap],
            ["finished with budget answers", tot["answered"] == args.budget],
        ],
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=SRC.parent
    ).stdout.strip()
    info = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cores": os.cpu_count(),
        "commit": commit,
    }
    gap = ledger_as_server - server_billed
    note = (
        f"Reading: the ledger is an upper bound of the bill. Beyond what the server billed it "
        f"counts {tot['malformed_images']} + {tot['cut_images']} images of malformed and cut "
        f"replies (the injector's, which never reach the model) and {gap} of the {unknown} "
        f"images whose outcome the client cannot know ({killed} in flight at the kills, "
        f"{tot['timeout_images']} timed out): the server's log has no answer for those {gap}. "
        f"Re-paid images: {repaid}."
    )
    text = "\n\n".join(
        [
            f"# Soak: {len(kills)} x kill -9 during an HTTP steal, faults on",
            f"Command: `PYTHONPATH=src {common.command_line()}` at commit {commit} "
            f"({info['cores']} cores, {seconds:.0f} s; faults {json.dumps(FAULTS)})",
            "## Each kill",
            per_kill,
            "## Totals",
            totals,
            "## Checks",
            checks,
            note,
        ]
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.md").write_text(text + "\n")
    data = {"kills": kills, "total": tot, "server_billed": server_billed, "lost": lost}
    (args.out / "soak.json").write_text(json.dumps({**info, **data}, indent=2) + "\n")


if __name__ == "__main__":
    main()
