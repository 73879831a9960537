"""Copycat against the extraction tools people use today, at equal budget.

Against the same target, with the same query images (copycat's pool stream, exactly the images
copycat sent), the same budget, copycat architecture, epochs and batch sizes:

- the Adversarial Robustness Toolbox's ``CopycatCNN``, label mode and probability mode;
- ART's ``KnockoffNets`` with the random strategy;
- copycat's own pipeline (``steal_stage`` + ``train_stage``: what the CLI runs), with labels
  and, to match ART's probability mode, with probabilities and soft labels.

Each tool runs in its own process, so its peak memory is its own. Wall time is the extraction
(query + train) only: ART is handed the pool as an in-memory array, so building the pool is not
in its time, while copycat's includes making its pool and persisting every answer.

    pip install adversarial-robustness-toolbox
    PYTHONPATH=src python benchmarks/peers.py --quick
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SCRIPT = Path(__file__).resolve()
QUICK_BUDGETS = [2_000]
TOOLS = {
    "copycat": "copycat (labels)",
    "copycat-soft": "copycat (probabilities, soft labels)",
    "art-copycat-label": "ART CopycatCNN (labels)",
    "art-copycat-probs": "ART CopycatCNN (probabilities)",
    "art-knockoff-random": "ART KnockoffNets (random)",
}
REFERENCE = {  # which copycat row each tool is compared with
    "copycat": "copycat",
    "copycat-soft": "copycat",
    "art-copycat-label": "copycat",
    "art-copycat-probs": "copycat-soft",
    "art-knockoff-random": "copycat",
}


def parse_args() -> Any:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--budgets", type=common.int_list, default=None, help="e.g. 2k,20k")
    p.add_argument("--arch", default=None, help="copycat architecture (default: the library's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the library's)")
    p.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated subset of {list(TOOLS)}"
    )
    return p.parse_args()


# -- the child side: one tool, one budget ----------------------------------------------------------
def _config(case: dict[str, Any], *, soft: bool) -> Any:
    changes: dict[str, Any] = {"steal": {"budget": case["budget"]}, "train": dict(case["train"])}
    if soft:
        changes["output"] = "probs"
        changes["train"]["labels"] = "soft"
    return common.experiment(
        Path(case["run_dir"]),
        Path(case["target"]),
        device=case["device"],
        seed=case["seed"],
        **changes,
    )


def _eval(model: Any, cfg: Any) -> dict[str, Any]:
    from copycat.data.datasets import load_labelled
    from copycat.devices import resolve_device
    from copycat.evaluate.evaluate import evaluate
    from copycat.oracles.registry import parse_oracle_spec

    oracle = parse_oracle_spec(cfg.oracle, output="label")
    test = load_labelled(cfg.test_set, input_shape=oracle.input_shape)
    ev = evaluate(model, test_set=test, oracle=oracle, device=resolve_device(cfg.train.device))
    return {
        "accuracy": ev.copycat_accuracy,
        "macro_f1": ev.copycat_macro_f1,
        "performance": ev.performance_accuracy,
        "performance_f1": ev.performance_macro_f1,
        "agreement": ev.agreement,
        "target_accuracy": ev.target_accuracy,
    }


def case_copycat(case: dict[str, Any]) -> dict[str, Any]:
    """copycat's pipeline, as ``copycat steal`` + ``copycat train`` run it."""
    import numpy as np

    from copycat.pipeline import steal_stage, train_stage
    from copycat.runs import RunDir
    from copycat.steal.store import AnswerStore
    from copycat.train.checkpoint import load_copycat

    common.quiet_logging()
    cfg = _config(case, soft=case["tool"] == "copycat-soft")
    t0 = time.perf_counter()
    summary = steal_stage(cfg)
    steal_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    train_stage(cfg)
    train_s = time.perf_counter() - t1
    wall_s = time.perf_counter() - t0
    run = RunDir.at(cfg.run_dir)
    if case.get("export"):
        with AnswerStore(run.store) as store:
            np.save(case["export"], store.load().images.numpy())
    return {
        "wall_s": wall_s,
        "steal_s": steal_s,
        "train_s": train_s,
        "queries": summary.answered,
        **_eval(load_copycat(run), cfg),
    }


def case_art(case: dict[str, Any]) -> dict[str, Any]:
    """ART as its documentation shows: wrap victim and thief in ``PyTorchClassifier`` and call
    ``extract(x, thieved_classifier=...)``."""
    import numpy as np
    import torch
    from art.attacks.extraction import CopycatCNN, KnockoffNets
    from art.estimators.classification import PyTorchClassifier

    from copycat.oracles.local import TorchOracle
    from copycat.train.models import build_model, channel_stats

    common.quiet_logging()
    cfg = _config(case, soft=False)
    device_type = "gpu" if case["device"].startswith("cuda") else "cpu"
    images = torch.from_numpy(np.load(case["pool"]))  # (N, C, H, W) uint8: copycat's queries
    x = images.numpy().astype(np.float32) / 255.0
    oracle = TorchOracle(case["target"], device=case["device"])
    shape = tuple(int(s) for s in x.shape[1:])
    k = oracle.num_classes
    # The victim answers with probabilities, as copycat's torch oracle does; ART's probability
    # mode then trains on them (with logits it would treat raw scores as targets).
    victim = PyTorchClassifier(
        model=torch.nn.Sequential(oracle.model(), torch.nn.Softmax(dim=1)),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=k,
        clip_values=(0.0, 1.0),
        device_type=device_type,
    )
    tc = cfg.train
    mean, std = channel_stats(images)
    np.random.seed(case["seed"])  # ART draws its sample with numpy's global generator
    torch.manual_seed(case["seed"])
    thief_model = build_model(
        tc.arch, in_channels=shape[0], num_classes=k, input_size=shape[1], mean=mean, std=std
    )
    # The same optimiser, learning rate and weight decay as copycat's fit (ART has no
    # per-step schedule in extract, so the rate stays constant).
    opt = torch.optim.AdamW(thief_model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    thief = PyTorchClassifier(
        model=thief_model,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=opt,
        input_shape=shape,
        nb_classes=k,
        clip_values=(0.0, 1.0),
        device_type=device_type,
    )
    common_kw = {
        "batch_size_fit": tc.batch_size,
        "batch_size_query": cfg.steal.batch_size,
        "nb_epochs": tc.epochs,
        "nb_stolen": case["budget"],
    }
    if case["tool"] == "art-knockoff-random":
        attack: Any = KnockoffNets(victim, sampling_strategy="random", verbose=False, **common_kw)
    else:
        attack = CopycatCNN(
            victim, use_probability=case["tool"] == "art-copycat-probs", **common_kw
        )
    t0 = time.perf_counter()
    attack.extract(x, thieved_classifier=thief)
    wall_s = time.perf_counter() - t0
    return {"wall_s": wall_s, "queries": min(len(x), case["budget"]), **_eval(thief_model, cfg)}


# -- the parent side -------------------------------------------------------------------------------
def main() -> None:
    args = parse_args()
    if args.case:
        common.case_main(
            {"copycat": case_copycat, "art": case_art},
        )
        return
    common.setup_threads(args.threads)
    common.quiet_logging()
    from copycat.config import ExperimentConfig

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tools {unknown}; choose from {list(TOOLS)}")
    # The copycat rows give the pool (and the reference figures): run them first.
    tools = sorted(tools, key=lambda t: (not t.startswith("copycat"), list(TOOLS).index(t)))
    device = common.resolve_device(args.device)
    info = common.machine_info(device, args.threads)
    budgets = args.budgets or (QUICK_BUDGETS if args.quick else [ExperimentConfig().steal.budget])
    train: dict[str, Any] = {}
    if args.arch:
        train["arch"] = args.arch
    if args.epochs:
        train["epochs"] = args.epochs
    target = common.bench_target(epochs=common.default_target_epochs(args), device=device)
    tsum = common.target_summary(target)
    work = common.work_dir(args, "peers")
    base = common.experiment(work, target, device=device, seed=args.seed, train=train)

    results: list[dict[str, Any]] = []
    for budget in budgets:
        pool_npy = work / f"pool-{budget}.npy"
        for tool in tools:
            if tool.startswith("art") and not pool_npy.is_file():
                raise SystemExit("the ART rows need the copycat row first (it exports the pool)")
            case = {
                "kind": "art" if tool.startswith("art") else "copycat",
                "name": f"{tool}@{budget}",
                "tool": tool,
                "budget": budget,
                "run_dir": str(work / f"{tool}-{budget}"),
                "target": str(target),
                "device": device,
                "seed": args.seed,
                "train": train,
                "pool": str(pool_npy),
                "export": str(pool_npy) if tool == "copycat" else None,
            }
            print(f"[{tool}] budget {budget} ...", flush=True)
            res = common.run_case(SCRIPT, case, threads=args.threads)
            res.update(tool=tool, label=TOOLS[tool], budget=budget)
            results.append(res)
            print(
                f"    accuracy {res['accuracy']:.4f}, agreement {res['agreement']:.4f}, "
                f"{res['wall_s']:.1f} s, {res['peak_mb']:.0f} MiB",
                flush=True,
            )
    for r in results:
        ref = next(
            (
                x
                for x in results
                if x["tool"] == REFERENCE[r["tool"]] and x["budget"] == r["budget"]
            ),
            None,
        )
        r["reference"] = REFERENCE[r["tool"]] if ref else None
        for key in ("accuracy", "performance", "agreement", "wall_s", "peak_mb"):
            r[f"{key}_ratio"] = r[key] / ref[key] if ref and ref[key] else None

    tc = base.train
    headers = [
        "tool",
        "budget",
        "accuracy",
        "perf. (acc)",
        "perf. (F1)",
        "agreement",
        "wall s",
        "peak MiB",
        "vs",
        "acc x",
        "agreement x",
        "time x",
        "memory x",
    ]
    rows = [
        [
            r["label"],
            r["budget"],
            r["accuracy"],
            r["performance"],
            r["performance_f1"],
            r["agreement"],
            r["wall_s"],
            r["peak_mb"],
            r["reference"] or "-",
            r["accuracy_ratio"],
            r["agreement_ratio"],
            r["wall_s_ratio"],
            r["peak_mb_ratio"],
        ]
        for r in results
    ]
    setup = (
        f"Target `{tsum['arch']}` ({tsum['epochs']} epochs, test accuracy "
        f"{tsum['test_accuracy']:.4f}). Every tool: pool `{base.pool.spec}` (copycat's stream, "
        f"seed {args.seed}: the exact images copycat sent), copycat arch `{tc.arch}`, "
        f"{tc.epochs} epochs, training batch {tc.batch_size}, query batch "
        f"{base.steal.batch_size}, AdamW lr {tc.lr} weight decay {tc.weight_decay}. "
        "Ratios (x) are to the copycat row named in *vs*: labels for the label tools, "
        "probabilities for ART's probability mode. Wall time: query + train; ART's excludes "
        "making the pool, copycat's includes it and the answer store."
    )
    if args.quick and args.target_epochs is None:
        setup += " (--quick: the target is trained for 2 epochs only.)"
    name = common.result_name("peers", quick=args.quick, tag=args.tag)
    json_rows = [
        {
            k: r.get(k)
            for k in (
                "tool",
                "label",
                "budget",
                "queries",
                "accuracy",
                "macro_f1",
                "performance",
                "performance_f1",
                "agreement",
                "wall_s",
                "peak_mb",
                "proc_s",
                "steal_s",
                "train_s",
                "reference",
                "accuracy_ratio",
                "performance_ratio",
                "agreement_ratio",
                "wall_s_ratio",
                "peak_mb_ratio",
            )
        }
        for r in results
    ]
    md, js = common.write_results(
        args.out,
        name,
        title="Copycat against its peers at equal budget",
        sections=[("", setup), ("Results", common.md_table(headers, rows))],
        data={
            "target": tsum,
            "train": dataclasses.asdict(tc),
            "rows": json_rows,
        },
        info=info,
        command=common.command_line(),
    )
    print(md.read_text())
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
