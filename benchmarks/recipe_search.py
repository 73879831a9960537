"""Search the NPD stealing recipe: each row is a real steal + train + evaluate through copycat's
library against the default Fashion-MNIST target, one seed, the variants named in VARIANTS.

Sized for a GPU (about 3 minutes per group on an H100); on 2 CPU cores use --quick or a group.

Defaults are chosen on a validation split, never on the test split: with ``--split val`` (the
default) the target trains on the first 50,000 Fashion-MNIST training images, the PD pool draws
from those too, and every copycat is scored on the last 10,000 (images neither the target nor
any pool has seen). ``--split test`` trains the target on all 60,000 and scores on the test
split: run it once, for the recipe already chosen.

    python benchmarks/recipe_search.py --group recipe --device cuda
    python benchmarks/recipe_search.py --quick          # 600 queries, 1 epoch: a smoke run

``--bank FILE.npz`` reads the NPD base images from a file (``bank`` array, (N, 1, 56, 56)
uint8) instead of decoding openclipart, for machines without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from copycat.config import AugmentConfig, PoolConfig, StealConfig, TargetConfig, TrainConfig
from copycat.data.datasets import LabelledSet, load_fashion_mnist
from copycat.evaluate.evaluate import evaluate
from copycat.oracles.local import TorchOracle
from copycat.oracles.outputs import restrict
from copycat.pipeline import train_copycat
from copycat.pools.pool import Pool
from copycat.pools.sources import BankSource, NoiseSource, npd_source
from copycat.runs import RunDir
from copycat.steal.loop import steal
from copycat.steal.selection import BalancedSelector
from copycat.steal.store import AnswerStore
from copycat.targets.publish import train_target, train_target_on
from copycat.train.checkpoint import load_copycat

SHAPE = (1, 28, 28)
R = dataclasses.replace
OLD_AUG = AugmentConfig(scale=(0.6, 1.0))  # the first defaults, before this search
OLD_TR = TrainConfig(augment=True)
A30 = AugmentConfig(scale=(0.3, 1.0))
NT = TrainConfig(augment=False)

# name -> keyword arguments of run(); "sel" is candidates per query with label-aware selection
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {
        "npd20k-base": {},
        "npd20k-nobal": {"tr": R(OLD_TR, balance=False)},
        "npd20k-inv50": {"aug": R(OLD_AUG, invert=0.5)},
        "npd20k-scale30": {"aug": R(OLD_AUG, scale=(0.3, 1.0))},
        "npd20k-noaug": {"aug": R(OLD_AUG, enabled=False)},
        "npd20k-ep30": {"tr": R(OLD_TR, epochs=30)},
        "npd20k-sel": {"sel": 5},
        "npd20k-soft": {"output": "probs"},
        "pd20k": {"pool": "pd"},
        "pd20k-noaug": {"pool": "pd", "aug": R(OLD_AUG, enabled=False)},
        "noise20k": {"pool": "noise"},
        "npd+pd20k": {"pool": "npd+pd"},
    },
    "recipe": {
        "s30-nt-ep10": {"aug": A30, "tr": NT},
        "s30-sel-nt-ep10": {"aug": A30, "tr": NT, "sel": 5},
        "s30-sel-nt-ep15": {"aug": A30, "tr": R(NT, epochs=15), "sel": 5},
        "s30-sel-nt-ep30": {"aug": A30, "tr": R(NT, epochs=30), "sel": 5},
        "s30-sel-nt-ep10-5k": {"budget": 5000, "aug": A30, "tr": NT, "sel": 5},
        "s30-sel-nt-ep15-50k": {"budget": 50000, "aug": A30, "tr": R(NT, epochs=15), "sel": 5},
    },
}


def split_train(full: LabelledSet, n: int) -> tuple[LabelledSet, LabelledSet]:
    """The first ``n`` images (to train the target) and the rest (the validation split)."""
    first = LabelledSet(full.images[:n], full.labels[:n], full.class_names, "fashion-mnist:fit")
    rest = LabelledSet(full.images[n:], full.labels[n:], full.class_names, "fashion-mnist:val")
    return first, rest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--group", choices=[*VARIANTS, "all"], default="all")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bank", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--tag", default="")
    ap.add_argument(
        "--split",
        choices=["val", "test"],
        default="val",
        help="score on a validation split (choose defaults here) or the test split (once)",
    )
    args = ap.parse_args()
    dev = args.device
    work = Path(tempfile.mkdtemp(prefix="copycat-search-"))
    t0 = time.time()
    tcfg = R(TargetConfig().train, device=dev, epochs=1 if args.quick else 8)
    if args.split == "val":
        full = load_fashion_mnist("train")
        fit_part, test = split_train(full, 50_000)
        tgt = train_target(fit_part, test, out=work / "target", config=tcfg)
        pd_images = fit_part.images
    else:
        tgt = train_target_on("fashion-mnist", out=work / "target", config=tcfg)
        test = load_fashion_mnist("test")
        pd_images = load_fashion_mnist("train").images
    oracle = TorchOracle(work / "target", device=dev)
    if args.bank is not None:
        bank: BankSource = BankSource("npd", torch.from_numpy(np.load(args.bank)["bank"]))
    else:
        bank = npd_source(shape=SHAPE, max_pixels=PoolConfig().max_pixels)
    sources = {
        "npd": lambda: BankSource("npd", bank.bank),
        "pd": lambda: BankSource("pd", pd_images),
        "noise": lambda: NoiseSource(shape=SHAPE),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("-" + args.tag if args.tag else "") + ("-val" if args.split == "val" else "")
    out = args.out / f"recipe_search{suffix}.jsonl"
    groups = list(VARIANTS) if args.group == "all" else [args.group]
    print(f"target accuracy {tgt.card.test_accuracy:.4f} ({tgt.seconds:.0f} s)")
    for name, kw in ((n, k) for g in groups for n, k in VARIANTS[g].items()):
        pool, budget = kw.get("pool", "npd"), kw.get("budget", 20_000)
        aug, tr = kw.get("aug", OLD_AUG), R(kw.get("tr", OLD_TR), device=dev)
        if args.quick:
            budget, tr = min(budget, 600), R(tr, epochs=1)
        t = time.time()
        parts = pool.split("+")
        p = Pool(
            [sources[x]() for x in parts],
            weights=[1.0] * len(parts),
            shape=SHAPE,
            augment=aug,
            seed=0,
            spec=pool,
        )
        run = RunDir.at(work / name)
        scfg = StealConfig(
            budget=budget,
            batch_size=512,
            candidates_per_query=kw.get("sel") or 5,
            selection="balanced" if kw.get("sel") else "random",
        )
        selector = (
            BalancedSelector(config=scfg, train=tr, num_classes=10) if kw.get("sel") else None
        )
        with AnswerStore(run.store) as store:
            steal(
                restrict(oracle, kw.get("output", "label")),
                p,
                store,
                config=scfg,
                selector=selector,
            )
            hist = store.label_histogram(10)
        train_copycat(run, config=tr)
        r = evaluate(load_copycat(run), test_set=test, oracle=oracle, device=torch.device(dev))
        row = {
            "name": name,
            "pool": pool,
            "budget": budget,
            "perf": round(r.performance_accuracy, 4),
            "perf_f1": round(r.performance_macro_f1, 4),
            "agree": round(r.agreement, 4),
            "acc": round(r.copycat_accuracy, 4),
            "target": round(r.target_accuracy, 4),
            "hist": hist,
            "split": args.split,
            "total_s": round(time.time() - t, 1),
            "device": dev,
        }
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.time() - t0:.0f} s; rows appended to {out}")


if __name__ == "__main__":
    main()
