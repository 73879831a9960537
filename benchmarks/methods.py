"""Attack methods compared at equal queries, scored on validation splits (never a test split).

Targets (each trained here on its training split only, cached):
- ``fmnist``: the library's Fashion-MNIST target recipe (cnn-target) on the first 50,000
  training images; validation: the other 10,000 training images.
- ``digits``: scikit-learn's handwritten digits (8x8, upscaled to 28x28), a ``cnn-tiny``
  target on 1,200 of them; validation: the other 597.

Rows: ``steal`` cases (a ``--selection`` strategy x budget, NPD pool, top-1 labels, cnn-small
copycat with the library's defaults); ``semi`` cases (the balanced answers trained with
FixMatch on unqueried pool images, and supervised-only for as long in wall time); ``soft``
cases (an oracle that reveals probabilities: soft labels at temperatures 1, 2, 4 and hard
labels). Results go to a JSONL file case by case, so the grid can be run in parts (each part
under ``timeout 600``) and a case already there is not run again.

    python benchmarks/methods.py --quick --targets digits --budgets 1000
    python benchmarks/methods.py --quick --targets fmnist --budgets 2000 --methods random,wide
    python benchmarks/methods.py --quick --table-only
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

METHODS = ["random", "balanced", "wide", "active", "jacobian", "mixup"]


# -- targets and validation sets ------------------------------------------------------------------
def fmnist_split() -> tuple[Any, Any]:
    from copycat.data.datasets import LabelledSet, load_fashion_mnist

    full = load_fashion_mnist("train")

    def part(sl: slice, name: str) -> LabelledSet:
        return LabelledSet(
            images=full.images[sl], labels=full.labels[sl], class_names=full.class_names, name=name
        )

    return part(slice(0, 50_000), "fmnist:train50k"), part(slice(50_000, None), "fmnist:val10k")


def digits_split() -> tuple[Any, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from copycat.data.datasets import LabelledSet

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    images = x.mul(255).round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    names = tuple(str(i) for i in range(10))
    tr, va = perm[:1200], perm[1200:]
    return (
        LabelledSet(images=images[tr], labels=labels[tr], class_names=names, name="digits:train"),
        LabelledSet(images=images[va], labels=labels[va], class_names=names, name="digits:val"),
    )


def target(name: str, *, quick: bool, device: str) -> tuple[Path, Any]:
    """The cached target folder of ``name`` and its validation set."""
    from copycat.config import TargetConfig
    from copycat.targets.publish import train_target

    if name == "fmnist":
        train_set, val = fmnist_split()
        cfg = dataclasses.replace(TargetConfig().train, epochs=2 if quick else 6, device=device)
    elif name == "digits":
        train_set, val = digits_split()
        cfg = dataclasses.replace(
            TargetConfig().train, arch="cnn-tiny", epochs=30, lr=1e-2, batch_size=64, device=device
        )
    else:
        raise SystemExit(f"unknown target {name!r}; use fmnist or digits")
    folder = common.cache_root().parent / "bench-methods" / f"{name}-{cfg.arch}-e{cfg.epochs}"
    if not (folder / "card.json").is_file():
        print(f"training target {name} into {folder} ...", flush=True)
        train_target(train_set, val, out=folder, config=cfg)
    return folder, val


# -- one case -------------------------------------------------------------------------------------
def score(run_dir: Path, folder: Path, val: Any, device: str) -> dict[str, float]:
    import torch

    from copycat.evaluate.evaluate import evaluate
    from copycat.oracles.local import TorchOracle
    from copycat.runs import RunDir
    from copycat.train.checkpoint import load_copycat

    res = evaluate(
        load_copycat(RunDir.at(run_dir)),
        test_set=val,
        oracle=TorchOracle(folder),
        device=torch.device(device),
    )
    return {
        "target_val_accuracy": res.target_accuracy,
        "performance": res.performance_accuracy,
        "agreement": res.agreement,
    }


def steal_case(
    run_dir: Path, folder: Path, *, selection: str, budget: int, seed: int, device: str, **ch: Any
) -> dict[str, Any]:
    """Steal into ``run_dir`` (skipped if its answers are complete); returns steal facts."""
    from copycat.pipeline import steal_stage
    from copycat.steal.store import AnswerStore

    cfg = common.experiment(
        run_dir,
        folder,
        device=device,
        seed=seed,
        steal={"selection": selection, "budget": budget},
        **ch,
    )
    if (run_dir / "steal.json").is_file():
        data = json.loads((run_dir / "steal.json").read_text())
        if data.get("answered") == budget:
            return {"steal_s": data["seconds"], "hist": data["label_histogram"]}
    t0 = time.perf_counter()
    s = steal_stage(cfg)
    with AnswerStore(run_dir / "answers.sqlite") as store:
        assert store.count() == budget
    return {"steal_s": time.perf_counter() - t0, "hist": s.label_histogram}


def train_case(
    run_dir: Path, folder: Path, val: Any, *, seed: int, device: str, **train: Any
) -> dict[str, Any]:
    import shutil

    from copycat.pipeline import train_stage

    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    cfg = common.experiment(run_dir, folder, device=device, seed=seed, train=train)
    t0 = time.perf_counter()
    res = train_stage(cfg)
    return {
        "train_s": time.perf_counter() - t0,
        "fit_s": res.seconds,
        **score(run_dir, folder, val, device),
    }


def run_cases(args: Any, done: set[str], out: Path) -> None:
    device = common.resolve_device(args.device)
    work = common.work_dir(args, "methods")
    for tname in args.targets:
        folder, val = target(tname, quick=args.quick, device=device)
        for budget in args.budgets:
            for seed in args.seeds:
                cases = [("steal", m) for m in args.methods]
                cases += [("semi", v) for v in args.semi]
                cases += [("soft", v) for v in args.soft]
                for kind, variant in cases:
                    key = f"{tname}|{kind}|{variant}|{budget}|{seed}"
                    if key in done:
                        continue
                    row = one_case(kind, variant, folder, val, work / tname, budget, seed, device)
                    row.update(target=tname, kind=kind, variant=variant, budget=budget, seed=seed)
                    row["key"] = key
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    done.add(key)
                    print(
                        f"{key}: perf {row['performance']:.3f} agr {row['agreement']:.3f} "
                        f"wall {row['wall_s']:.0f}s",
                        flush=True,
                    )


def one_case(
    kind: str,
    variant: str,
    folder: Path,
    val: Any,
    work: Path,
    budget: int,
    seed: int,
    device: str,
) -> dict[str, Any]:
    if kind == "steal":
        run = work / f"{variant}-{budget}-s{seed}"
        st = steal_case(run, folder, selection=variant, budget=budget, seed=seed, device=device)
        tr = train_case(run, folder, val, seed=seed, device=device)
        hist = st["hist"]
        return {
            **st,
            **tr,
            "rarest_share": min(hist) / max(1, sum(hist)),
            "wall_s": st["steal_s"] + tr["train_s"],
        }
    if kind == "semi":  # on the balanced answers of the same budget and seed
        run = work / f"balanced-{budget}-s{seed}"
        st = steal_case(run, folder, selection="balanced", budget=budget, seed=seed, device=device)
        if variant == "fixmatch":
            tr = train_case(run, folder, val, seed=seed, device=device, semi="fixmatch")
        else:  # "supervised-Ne": the equal-wall-time comparison, N epochs
            epochs = int(variant.split("-")[1].rstrip("e"))
            tr = train_case(run, folder, val, seed=seed, device=device, epochs=epochs)
        return {**st, **tr, "wall_s": st["steal_s"] + tr["train_s"]}
    # soft: an oracle that reveals probabilities; balanced selection
    run = work / f"probs-{budget}-s{seed}"
    st = steal_case(
        run, folder, selection="balanced", budget=budget, seed=seed, device=device, output="probs"
    )
    if variant == "hard":
        tr = train_case(run, folder, val, seed=seed, device=device, labels="hard")
    else:
        t = float(variant.lstrip("T"))
        tr = train_case(run, folder, val, seed=seed, device=device, temperature=t)
    return {**st, **tr, "wall_s": st["steal_s"] + tr["train_s"]}


# -- the table ------------------------------------------------------------------------------------
def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["kind"], r["variant"], r["budget"]), []).append(r)
    out = []
    for (tname, kind, variant, budget), rs in sorted(groups.items()):
        out.append(
            [
                tname,
                kind,
                variant,
                budget,
                len(rs),
                spread([r["performance"] for r in rs]),
                spread([r["agreement"] for r in rs]),
                spread([r.get("rarest_share", float("nan")) for r in rs])
                if kind == "steal"
                else "-",
                statistics.mean(r["steal_s"] for r in rs),
                statistics.mean(r["train_s"] for r in rs),
            ]
        )
    return common.md_table(
        [
            "target",
            "case",
            "method",
            "queries",
            "seeds",
            "performance (val acc)",
            "agreement (val)",
            "rarest class share",
            "steal s",
            "train s",
        ],
        out,
    )


def main() -> None:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--targets", type=lambda s: s.split(","), default=["digits", "fmnist"])
    p.add_argument("--budgets", type=common.int_list, default=None)
    p.add_argument("--seeds", type=common.int_list, default=[0])
    p.add_argument("--methods", type=lambda s: [m for m in s.split(",") if m], default=METHODS)
    p.add_argument("--semi", type=lambda s: [m for m in s.split(",") if m], default=[])
    p.add_argument("--soft", type=lambda s: [m for m in s.split(",") if m], default=[])
    p.add_argument("--table-only", action="store_true", help="print the table of the JSONL")
    args = p.parse_args()
    args.budgets = args.budgets or ([1000, 3000] if args.quick else [2000, 5000, 20_000])
    common.setup_process(args.threads)
    common.quiet_logging()
    name = common.result_name("methods", quick=args.quick, tag=args.tag)
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"{name}.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    if not args.table_only:
        run_cases(args, {r["key"] for r in rows}, jsonl)
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    body = table(rows)
    print(body)
    sections = [("", body)]
    parts = args.out / f"{name}-commands.txt"
    if parts.is_file():  # the grid is run in parts: list them
        sections.append(("Parts run", "```\n" + parts.read_text().strip() + "\n```"))
    info = common.machine_info(common.resolve_device(args.device), args.threads)
    common.write_results(
        args.out,
        name,
        title="Attack methods at equal queries (validation splits)",
        sections=sections,
        data={"rows": rows},
        info=info,
        command=common.command_line(),
    )


if __name__ == "__main__":
    main()
