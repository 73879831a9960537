"""Does the default copycat (the mean of several copies) carry a DAWN watermark as one copy does?

For each seed: steal a suite target through a watermark (``watermark:rate=R``, a fixed key from
this script's environment) with the library's default recipe and the target's NPD pool, train
the copycat as ``copycat train`` does (``[train] ensemble`` copies; the first is the single
copy ``--ensemble 1`` would train, bit for bit), then test the ensemble and each of its copies
alone with ``copycat verify``'s test on the run's own queries, and score them on the target's
validation split. Prints one row per seed and a summary per copycat.

    python benchmarks/watermark_copies.py --targets-dir targets/suite --target fmnist \
        --budget 5000 --rate 0.01 --seeds 3 --work W --out benchmarks/results --tag fmnist-5k
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

KEY_ENV = "COPYCAT_BENCH_WM_KEY"
# a fixed key, so a rerun gives the same watermark: a benchmark's key, not a secret
BENCH_KEY = "copycat-benchmark-watermark-key-0001"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets-dir", type=Path, required=True, help="the suite (make suite)")
    p.add_argument("--target", default="fmnist", help="a suite target's name")
    p.add_argument("--budget", type=int, default=5000, help="queries per steal")
    p.add_argument("--rate", type=float, default=0.01, help="the watermark's rate")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--split", default="val", help="the split the copies are scored on")
    p.add_argument("--alpha", type=float, default=0.01, help="the verdict's significance level")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--work", type=Path, default=None, help="keep the runs here (resumable)")
    p.add_argument("--out", type=Path, default=None, help="write watermark-copies[-TAG].md/json")
    p.add_argument("--tag", default="")
    return p.parse_args(argv)


def one_seed(target: Any, folder: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from copycat.data.datasets import load_labelled
    from copycat.defences.watermark import read_key, watermark_test
    from copycat.evaluate.evaluate import oracle_labels
    from copycat.oracles.registry import parse_oracle_spec
    from copycat.pipeline import steal_stage, train_stage
    from copycat.runs import RunDir
    from copycat.steal.store import AnswerStore
    from copycat.train.checkpoint import load_copycat
    from copycat.train.fit import predict
    from copycat.train.models import Ensemble

    work = common.work_dir(args, "watermark-copies")
    run = work / f"{target.name}-r{args.rate:g}-b{args.budget}-s{seed}"
    cfg = common.experiment(
        run,
        folder,
        device="cpu",
        seed=seed,
        pool={"spec": target.npd_pool_of((), ())},
        steal={"budget": args.budget},
        defences=(f"watermark:rate={args.rate:g},key_env={KEY_ENV}",),
    )
    cfg = dataclasses.replace(cfg, test_set=f"{target.dataset}:{args.split}")
    t0 = time.perf_counter()
    steal_stage(cfg)
    steal_s = time.perf_counter() - t0
    rd = RunDir.at(run)
    t0 = time.perf_counter()
    if not rd.copycat_weights.is_file():
        train_stage(cfg)
    train_s = time.perf_counter() - t0
    model = load_copycat(rd)
    members = list(model.members) if isinstance(model, Ensemble) else [model]

    oracle = parse_oracle_spec(cfg.oracle, output="label")  # the target, undefended
    with AnswerStore(rd.store) as store:
        queries = store.load().images
    truth = oracle_labels(oracle, queries)
    test = load_labelled(cfg.test_set, input_shape=oracle.input_shape)
    target_test = oracle_labels(oracle, test.images)
    target_acc = float((target_test == test.labels).float().mean())
    dev = torch.device("cpu")
    key = read_key(KEY_ENV)

    def row(m: torch.nn.Module) -> dict[str, Any]:
        v = watermark_test(
            queries,
            target_labels=truth,
            suspect_labels=predict(m, queries, device=dev).argmax(1),
            key=key,
            rate=args.rate,
            num_classes=oracle.num_classes,
            alpha=args.alpha,
        )
        pred = predict(m, test.images, device=dev).argmax(1)
        return {
            "flipped": v.flipped,
            "matches": v.matches,
            "informative": v.informative,
            "p_value": v.p_value,
            "stolen": v.stolen,
            "performance": float((pred == test.labels).float().mean()) / target_acc,
            "agreement": float((pred == target_test).float().mean()),
        }

    return {
        "seed": seed,
        "steal_s": steal_s,
        "train_s": train_s,
        "copies": len(members),
        "ensemble": row(model),
        "members": [row(m) for m in members],
    }


def tables(results: list[dict[str, Any]]) -> tuple[str, str]:
    rows = []
    for r in results:
        e, copies = r["ensemble"], r["members"]
        first = copies[0]
        rows.append(
            [
                r["seed"],
                e["flipped"],
                f"{first['matches']} (p {first['p_value']:.2g})",
                ", ".join(str(m["matches"]) for m in copies),
                f"{e['matches']} (p {e['p_value']:.2g})",
                f"{sum(m['stolen'] for m in copies)} of {len(copies)}",
                "yes" if e["stolen"] else "no",
                f"{first['performance']:.3f}",
                f"{e['performance']:.3f}",
            ]
        )
    header = [
        "seed",
        "flipped answers",
        "one copy: matches",
        "each copy: matches",
        "mean of the copies: matches",
        "copies flagged",
        "mean flagged",
        "one copy: performance",
        "mean: performance",
    ]
    per_seed = common.md_table(header, rows)

    def summary(pick: Any) -> list[Any]:
        got = [pick(r) for r in results]
        share = [g["matches"] / max(1, g["flipped"]) for g in got]
        return [
            f"{sum(g['stolen'] for g in got)} of {len(got)}",
            f"{statistics.median(share):.3f} [{min(share):.3f}-{max(share):.3f}]",
            f"{statistics.median(g['performance'] for g in got):.3f}",
        ]

    summ = common.md_table(
        ["copycat", "flagged (p < alpha)", "share of flipped answers reproduced", "performance"],
        [
            ["one copy (`--ensemble 1`)", *summary(lambda r: r["members"][0])],
            ["mean of the copies (the default)", *summary(lambda r: r["ensemble"])],
        ],
    )
    return per_seed, summ


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from copycat.targets.suite import suite_target

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault(KEY_ENV, BENCH_KEY)
    target = suite_target(args.target)
    folder = args.targets_dir / target.name
    if not (folder / "card.json").is_file():
        raise SystemExit(f"no target at {folder}; build it with `make suite`")
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        results.append(one_seed(target, folder, seed, args))
        print(f"seed {seed} done", flush=True)
    per_seed, summ = tables(results)
    print(per_seed)
    print()
    print(summ)
    if args.out:
        common.write_results(
            args.out,
            common.result_name("watermark-copies", quick=False, tag=args.tag),
            title=(
                f"A watermark (rate {args.rate:g}) in one copy and in the mean of the copies "
                f"({args.target}, {args.budget} queries, split {args.split})"
            ),
            sections=[("By seed", per_seed), ("Summary", summ)],
            data={"results": results, "args": {k: str(v) for k, v in vars(args).items()}},
            info=common.machine_info("cpu", args.threads),
            command=common.command_line(),
        )


if __name__ == "__main__":
    main()
