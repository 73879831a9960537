"""Defences under test: each attack against each defence on the default Fashion-MNIST target.

Cells give copycat performance and agreement (mean ± sd over seeds), the benign utility of each
defence (the defended target's accuracy on its test set and agreement with the undefended
target), detection (queries until PRADA's alarm; false alarms on benign test traffic) and
watermark verification (true positives on copies of the watermarked target; false positives on
the copycats of the undefended target, one per seed). Every cell is run by ``copycat audit``'s
own code (:func:`copycat.audit.matrix.run_audit`).

    python benchmarks/defences.py --quick      # 500 queries, 6k-image target, 1 seed (~8 min)
    python benchmarks/defences.py              # 5k queries, default target, 3 seeds
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

KEY_ENV = "COPYCAT_BENCH_WM_KEY"
ATTACKS = ("npd-labels", "npd-probs", "pd-labels")
DEFENCES = (
    "none",
    "noise:gauss,sigma=0.1",
    "reverse-sigmoid:beta=1,gamma=0.1",
    "mad:eps=0.5",
    "mad:eps=1.0,argmax=1",
    "adaptive-misinfo:tau=0.5",
    "prada:delta=0.9,action=block",
    f"watermark:rate=0.01,key_env={KEY_ENV}",
)
#: --quick leaves out the two variants (CPU time): Gaussian noise and MAD-argmax.
QUICK_DEFENCES = tuple(
    d for d in DEFENCES if d not in ("noise:gauss,sigma=0.1", "mad:eps=1.0,argmax=1")
)


def summarise(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per defence: benign cost, then performance and agreement per attack."""
    from copycat.audit.render import group, mean_sd

    cfg = data["config"]
    groups = group(data["cells"])
    headers = ["defence", "benign acc", "cost (pts)", "benign agr", "false alarm"]
    for a in cfg["attacks"]:
        headers += [f"{a} perf", f"{a} agr", f"{a} alarm"]
    rows = []
    for d in cfg["defences"]:
        u = data["utility"][d]
        row: list[Any] = [
            f"`{d}`",
            u["accuracy"],
            100 * u["accuracy_cost"],
            u["agreement"],
            "none" if u["false_alarm_at"] is None else f"at {u['false_alarm_at']}",
        ]
        for b in cfg["budgets"]:
            for a in cfg["attacks"]:
                cells = groups.get((b, a, d), [])
                row += [_pm(mean_sd([c["performance"] for c in cells]))]
                row += [_pm(mean_sd([c["agreement"] for c in cells]))]
                alarms = [c["alarm_at"] for c in cells if c["alarm_at"] is not None]
                row += [f"{len(alarms)}/{len(cells)} at {sorted(alarms)}" if alarms else "-"]
        rows.append(row)
    return headers, rows


def _pm(stats: tuple[float | None, float | None, int]) -> str:
    m, sd, _ = stats
    return "-" if m is None else f"{m:.3f} ± {sd:.3f}"


def watermark_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["suspect", "kind", "flipped", "matches", "informative", "p-value", "stolen?"]
    rows: list[list[Any]] = []
    for c in data["cells"]:
        w = c.get("watermark")
        if w:
            name = f"{c['attack']} s{c['seed']}"
            rows.append(
                [
                    name,
                    "copy",
                    w["flipped"],
                    w["matches"],
                    w["informative"],
                    f"{w['p_value']:.2g}",
                    w["stolen"],
                ]
            )
    for n in data["watermark_negatives"]:
        rows.append(
            [
                n["suspect"].split("__")[0] + " " + n["suspect"].split("__")[-1],
                "independent, on the queries of " + n["watermark_cell"].split("__")[0],
                n["flipped"],
                n["matches"],
                n["informative"],
                f"{n['p_value']:.2g}",
                n["stolen"],
            ]
        )
    return headers, rows


def tiny_fashion_mnist(root: Path, *, n_train: int, n_test: int, seed: int) -> Path:
    """A seeded subset of the real Fashion-MNIST in IDX format (the quick mode's data)."""
    import gzip

    import numpy as np
    import torch

    from copycat.data.datasets import load_fashion_mnist

    root.mkdir(parents=True, exist_ok=True)
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        if (root / f"{stem}-labels-idx1-ubyte.gz").is_file():
            continue
        full = load_fashion_mnist(split)
        idx = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))[:n]
        for kind, arr in (("images-idx3", full.images[idx, 0]), ("labels-idx1", full.labels[idx])):
            a = arr.numpy().astype(np.uint8)
            head = bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
            (root / f"{stem}-{kind}-ubyte.gz").write_bytes(gzip.compress(head + a.tobytes(), 1))
    return root


def quick_target(work: Path, *, device: str, seed: int) -> Path:
    """The quick mode's target: cnn-small, 2 epochs on 6,000 Fashion-MNIST images."""
    from copycat.config import TrainConfig
    from copycat.targets.publish import train_target_on

    folder = work / "target"
    if not (folder / "card.json").is_file():
        cfg = TrainConfig(
            arch="cnn-small",
            epochs=2,
            balance=False,
            augment=True,
            val_fraction=0.0,
            seed=seed,
            device=device,
        )
        train_target_on("fashion-mnist", out=folder, config=cfg)
    return folder


def prada_synthetic(
    target: Path, *, seed: int, n_seeds: int = 10, steps: int = 50
) -> dict[str, Any]:
    """PRADA on a JbDA-like synthetic stream: a few test images, each followed by small
    signed steps away from itself (what Jacobian-based augmentation sends); no training."""
    import torch

    from copycat.data.datasets import load_labelled
    from copycat.defences.base import QueryRefused, as_client
    from copycat.defences.registry import open_defended

    oracle = open_defended(f"torch:{target}", ["prada:delta=0.9,action=block"], output="label")
    base = load_labelled("fashion-mnist:test").images[:n_seeds].float().div(255.0)
    g = torch.Generator().manual_seed(seed)
    signs = torch.sign(torch.randn(n_seeds, steps, *base.shape[1:], generator=g)) * 0.1
    stream = (base[:, None] + signs.cumsum(1) * 0.1).clamp(0, 1).flatten(0, 1)
    with as_client("jbda"):
        for chunk in stream.split(50):
            try:
                oracle.query(chunk)
            except QueryRefused as exc:
                return {"queries": len(stream), "alarm_at": exc.alarm_at}
    return {"queries": len(stream), "alarm_at": None}


def dawn_fitting_copy(cfg: Any, work: Path, *, rate: float, epochs: int) -> dict[str, Any]:
    """DAWN when the copy fits its answers: PD queries through ``watermark:rate=R``, a copycat
    trained for ``epochs``; the undefended copycats of the matrix are the independent models."""
    import dataclasses as dc

    from copycat.audit.matrix import cell_name, defence_utility
    from copycat.audit.verify import verify
    from copycat.config import ExperimentConfig, StealConfig
    from copycat.pipeline import steal_stage, train_stage

    spec = f"watermark:rate={rate:g},key_env={KEY_ENV}"
    run = work / "dawn-fit"
    budget = cfg.budgets[0]
    exp = ExperimentConfig(
        run_dir=str(run),
        oracle=cfg.oracle,
        defences=(spec,),
        steal=StealConfig(budget=budget, selection=cfg.selection),
        train=dc.replace(cfg.train, epochs=epochs),
    )
    exp = dc.replace(exp, pool=dc.replace(exp.pool, spec="pd:fashion-mnist"))
    exp = dc.replace(
        exp, pool=dc.replace(exp.pool, augment=dc.replace(exp.pool.augment, enabled=False))
    )
    if not (run / "copycat.safetensors").is_file():
        steal_stage(exp)
        train_stage(exp)
    target = cfg.oracle.partition(":")[2]
    copy = verify(run, target=target)
    negatives = []
    for attack in cfg.attacks:
        for seed in cfg.seeds:
            suspect = Path(cfg.out) / "cells" / cell_name(attack, "none", budget, seed)
            if (suspect / "copycat.safetensors").is_file():
                v = verify(suspect, target=target, queries=run)
                negatives.append(
                    {"suspect": f"{attack} s{seed}", **dc.asdict(v), "stolen": v.stolen}
                )
    return {
        "defence": spec,
        "epochs": epochs,
        "utility": defence_utility(cfg, spec),
        "copy": {**dc.asdict(copy), "stolen": copy.stolen},
        "negatives": negatives,
    }


def prada_text(r: dict[str, Any]) -> str:
    at = r["alarm_at"]
    return f"{r['queries']} queries (10 test images, each followed by small signed steps): " + (
        f"alarm after {at} queries." if at is not None else "no alarm."
    )


def dawn_text(r: dict[str, Any]) -> str:
    c, u = r["copy"], r["utility"]
    rows = [
        [
            "copy (trained on watermarked answers)",
            c["flipped"],
            c["matches"],
            c["informative"],
            f"{c['p_value']:.2g}",
            c["stolen"],
        ]
    ]
    rows += [
        [
            f"independent: {n['suspect']}",
            n["flipped"],
            n["matches"],
            n["informative"],
            f"{n['p_value']:.2g}",
            n["stolen"],
        ]
        for n in r["negatives"]
    ]
    fp = sum(n["stolen"] for n in r["negatives"])
    head = (
        f"`{r['defence']}`, PD queries, copycat trained for {r['epochs']} epochs; benign cost "
        f"{100 * u['accuracy_cost']:.2f} points. True positive: {c['stolen']}; false positives: "
        f"{fp} of {len(r['negatives'])} independent models."
    )
    table = common.md_table(
        ["suspect", "flipped", "matches", "informative", "p-value", "stolen?"], rows
    )
    return head + "\n\n" + table


def main() -> None:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--budgets", type=common.int_list, default=None)
    p.add_argument("--seeds", default=None, help="default 0,1,2 (0 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="copycat epochs")
    p.add_argument("--defences", default=None, help="';'-separated defence specs")
    p.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated attacks")
    args = p.parse_args()
    common.setup_process(args.threads)
    common.quiet_logging()
    os.environ.setdefault(KEY_ENV, "benchmark-watermark-key")  # a fixed key: reproducible
    device = common.resolve_device(args.device)
    info = common.machine_info(device, args.threads)
    from copycat.audit.matrix import run_audit
    from copycat.audit.render import render_audit
    from copycat.config import AuditConfig, TrainConfig

    work = common.work_dir(args, "defences")
    if args.quick:  # 2 CPU cores shared: a subset of Fashion-MNIST and tiny copycats
        os.environ["COPYCAT_DATA"] = str(
            tiny_fashion_mnist(work / "data", n_train=6000, n_test=1000, seed=args.seed)
        )
        target = quick_target(work, device=device, seed=args.seed)
    else:
        target = common.bench_target(epochs=args.target_epochs, device=device)
    budgets = tuple(args.budgets or ([500] if args.quick else [5000]))
    epochs = args.epochs or (5 if args.quick else 10)
    defences = (
        tuple(args.defences.split(";"))
        if args.defences
        else (QUICK_DEFENCES if args.quick else DEFENCES)
    )
    cfg = AuditConfig(
        out=str(work / "audit"),
        oracle=f"torch:{target}",
        attacks=tuple(args.attacks.split(",")),
        defences=defences,
        budgets=budgets,
        seeds=tuple(int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")),
        benign_images=1000 if args.quick else 10000,
        selection="random" if args.quick else "balanced",
        train=dataclasses.replace(
            TrainConfig(),
            epochs=epochs,
            device=device,
        ),
    )
    t0 = time.perf_counter()
    data = run_audit(cfg, on_cell=lambda name, cell: print(name, "done" if cell else "..."))
    render_audit(data, work / "audit")
    prada = prada_synthetic(target, seed=args.seed)
    dawn = dawn_fitting_copy(cfg, work, rate=0.05, epochs=30)
    seconds = time.perf_counter() - t0
    headers, rows = summarise(data)
    wm_headers, wm_rows = watermark_rows(data)
    summary = common.target_summary(target)
    sections = [
        (
            "Target and setting",
            f"Target {summary['arch']} ({summary['epochs']} epoch(s) on "
            f"{'6,000' if args.quick else '60,000'} Fashion-MNIST images, test accuracy "
            f"{summary['test_accuracy']:.4f}); budget {list(budgets)}; copycat {cfg.train.arch} "
            f"for {epochs} epochs; selection {cfg.selection}; seeds {list(cfg.seeds)}; benign "
            f"traffic: the first {cfg.benign_images} test images; wall {seconds:.0f} s.",
        ),
        (
            "Matrix (performance and agreement: mean ± sd over seeds)",
            common.md_table(headers, rows),
        ),
        ("Watermark verification (p < 0.01: stolen)", common.md_table(wm_headers, wm_rows)),
        ("PRADA on a synthetic (JbDA-like) query stream", prada_text(prada)),
        ("DAWN when the copy fits its answers", dawn_text(dawn)),
    ]
    name = common.result_name("defences", quick=args.quick, tag=args.tag)
    md, _ = common.write_results(
        args.out,
        name,
        title="Defences under test: attack x defence matrix",
        sections=sections,
        data={
            "audit": data,
            "prada_synthetic": prada,
            "dawn_fit": dawn,
            "seconds": seconds,
            "target": summary,
        },
        info=info,
        command=common.command_line(),
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
