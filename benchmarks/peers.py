"""Copycat against the extraction tools people use today, at equal budget, over several seeds.

Against the same target, with the same query images (copycat's pool stream, exactly the images
copycat sent), the same budget and copycat architecture:

- copycat's own pipeline (``steal_stage`` + ``train_stage``: what the CLI runs), with labels
  and, to match ART's probability mode, with probabilities and soft labels;
- the Adversarial Robustness Toolbox's ``CopycatCNN`` (label and probability mode) and
  ``KnockoffNets`` (random strategy), each in two labelled settings:

  - ``copycat's training``: ART's attack (its sampling, its queries, its hard-label loss) with
    the thief trained by copycat's recipe: AdamW, the one-cycle schedule stepped per batch,
    class-balanced sampling, copycat's epochs, batch size, learning rate and weight decay;
  - ``ART defaults``: the attack's own constructor defaults (``batch_size_fit=1``,
    ``batch_size_query=1``, ``nb_epochs=10``) and ``PyTorchClassifier.fit``; ART sets no
    optimiser for the thief, so it is ``torch.optim.Adam`` at torch's default rate.

Every row is run for each seed in ``--seeds`` (three by default) and reported as mean and
sample standard deviation. Each case runs in its own process, so its peak memory is its own.
Wall time is the extraction (query + train) only: ART is handed the pool as an in-memory array,
so building the pool is not in its time, while copycat's includes making its pool and
persisting every answer. Scores are on the Fashion-MNIST test split; nothing here chooses a
default.

ART's defaults fit with batch 1: on 2 busy CPU cores that took about 45 s per case at 200
queries, so about 8 minutes per case at the quick grid's 2,000 (``--settings matched`` skips
those rows).

    pip install adversarial-robustness-toolbox
    PYTHONPATH=src python benchmarks/peers.py --quick
"""

from __future__ import annotations

import dataclasses
import importlib.util
import statistics
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
SETTINGS = {
    "copycat": "copycat's own",
    "matched": "copycat's training (AdamW, one-cycle, balanced)",
    "defaults": "ART defaults (batch 1, 10 epochs, Adam)",
}
REFERENCE = {  # which copycat row each tool is compared with
    "copycat": "copycat",
    "copycat-soft": "copycat",
    "art-copycat-label": "copycat",
    "art-copycat-probs": "copycat-soft",
    "art-knockoff-random": "copycat",
}
ART_PIP = "pip install adversarial-robustness-toolbox"


def parse_args() -> Any:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--budgets", type=common.int_list, default=None, help="e.g. 2k,20k")
    p.add_argument("--arch", default=None, help="copycat architecture (default: the library's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the library's)")
    p.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated subset of {list(TOOLS)}"
    )
    p.add_argument(
        "--settings",
        default="matched,defaults",
        help="ART settings to run: matched (copycat's training recipe), defaults (ART's own)",
    )
    p.add_argument("--seeds", type=common.int_list, default=[0, 1, 2], help="e.g. 0,1,2")
    return p.parse_args()


def require_art(tools: list[str]) -> None:
    """Stop before any work when ART rows are asked for and ART is not installed."""
    if any(t.startswith("art") for t in tools) and importlib.util.find_spec("art") is None:
        raise SystemExit(
            "the ART rows need the Adversarial Robustness Toolbox, which is not installed: "
            f"run `{ART_PIP}` (or pass --tools copycat,copycat-soft)"
        )


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


def _recipe_classifier(train_config: Any) -> Any:
    """ART's ``PyTorchClassifier`` whose ``fit`` trains with copycat's recipe
    (:func:`copycat.train.fit.fit`: AdamW, one-cycle per batch, balanced sampling). Targets are
    reduced to hard labels, as ART's own ``fit`` does with a cross-entropy loss."""
    import numpy as np
    import torch
    from art.estimators.classification import PyTorchClassifier

    from copycat.train.fit import fit

    class RecipeClassifier(PyTorchClassifier):  # type: ignore[misc]
        def fit(self, x: Any, y: Any, batch_size: int = 128, nb_epochs: int = 10, **_: Any) -> None:
            images = torch.from_numpy(np.round(np.asarray(x) * 255.0).astype(np.uint8))
            y = np.asarray(y)
            labels = torch.from_numpy((y.argmax(1) if y.ndim == 2 else y).astype(np.int64))
            cfg = dataclasses.replace(
                train_config, batch_size=batch_size, epochs=nb_epochs, val_fraction=0.0
            )
            fit(self.model, images, labels, config=cfg)

    return RecipeClassifier


def case_art(case: dict[str, Any]) -> dict[str, Any]:
    """ART as its documentation shows: wrap victim and thief in ``PyTorchClassifier`` and call
    ``extract(x, thieved_classifier=...)``; the thief trains by copycat's recipe (``matched``)
    or by ART's defaults (``defaults``)."""
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
    matched = case["setting"] == "matched"
    if matched:
        cls, opt = _recipe_classifier(tc), None  # copycat's fit makes its own AdamW
        attack_kw: dict[str, Any] = {
            "batch_size_fit": tc.batch_size,
            "batch_size_query": cfg.steal.batch_size,
            # copycat's epochs for its training share of these answers (ART trains on all)
            "nb_epochs": tc.epochs_for(int(len(images) * (1 - tc.val_fraction))),
        }
    else:
        cls, opt = PyTorchClassifier, torch.optim.Adam(thief_model.parameters())
        attack_kw = {}  # ART's constructor defaults: batch 1 to fit and to query, 10 epochs
    thief = cls(
        model=thief_model,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=opt,
        input_shape=shape,
        nb_classes=k,
        clip_values=(0.0, 1.0),
        device_type=device_type,
    )
    attack_kw["nb_stolen"] = case["budget"]
    if case["tool"] == "art-knockoff-random":
        attack: Any = KnockoffNets(victim, sampling_strategy="random", verbose=False, **attack_kw)
    else:
        attack = CopycatCNN(
            victim, use_probability=case["tool"] == "art-copycat-probs", **attack_kw
        )
    t0 = time.perf_counter()
    attack.extract(x, thieved_classifier=thief)
    wall_s = time.perf_counter() - t0
    return {"wall_s": wall_s, "queries": min(len(x), case["budget"]), **_eval(thief_model, cfg)}


# -- the parent side -------------------------------------------------------------------------------
def _rows(tools: list[str], settings: list[str]) -> list[tuple[str, str]]:
    """(tool, setting) pairs; copycat rows first, since they export the pool ART is given."""
    rows = [(t, "copycat") for t in tools if t.startswith("copycat")]
    rows += [(t, s) for t in tools if t.startswith("art") for s in settings]
    return rows


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (tool, setting, budget): mean and sample sd over seeds, ratios of means to
    the reference copycat row."""
    keys = ("accuracy", "performance", "performance_f1", "agreement", "wall_s", "peak_mb")
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["tool"], r["setting"], r["budget"]), []).append(r)
    out = []
    for (tool, setting, budget), rs in groups.items():
        row: dict[str, Any] = {"tool": tool, "setting": setting, "budget": budget}
        row["seeds"] = [r["seed"] for r in rs]
        for key in keys:
            row[key], row[f"{key}_sd"] = _mean_sd([float(r[key]) for r in rs])
        out.append(row)
    for row in out:
        ref = next(
            (
                x
                for x in out
                if x["tool"] == REFERENCE[row["tool"]]
                and x["setting"] == "copycat"
                and x["budget"] == row["budget"]
            ),
            None,
        )
        row["reference"] = REFERENCE[row["tool"]] if ref else None
        for key in ("performance", "agreement", "wall_s"):
            row[f"{key}_ratio"] = row[key] / ref[key] if ref and ref[key] else None
    return out


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    return f"{row[key]:.{digits}f} ± {row[key + '_sd']:.{digits}f}"


def main() -> None:
    args = parse_args()
    if args.case:
        common.case_main({"copycat": case_copycat, "art": case_art})
        return
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [t for t in tools if t not in TOOLS] + [
        s for s in settings if s not in SETTINGS or s == "copycat"
    ]
    if unknown:
        raise SystemExit(f"unknown tools or settings {unknown}; choose from {list(TOOLS)} and "
                         "matched,defaults")  # fmt: skip
    require_art(tools)  # before any work: no target trained, no pool made
    common.setup_process(args.threads)
    common.quiet_logging()
    from copycat.config import ExperimentConfig

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
    base = common.experiment(work, target, device=device, seed=args.seeds[0], train=train)
    rows = _rows(tools, settings)
    if any(t.startswith("art") for t, _ in rows) and "copycat" not in tools:
        raise SystemExit("the ART rows need the copycat row too (it exports the pool)")

    results: list[dict[str, Any]] = []
    for budget in budgets:
        for seed in args.seeds:
            pool_npy = work / f"pool-{budget}-s{seed}.npy"
            for tool, setting in rows:
                case = {
                    "kind": "art" if tool.startswith("art") else "copycat",
                    "name": f"{tool}/{setting}@{budget}/s{seed}",
                    "tool": tool,
                    "setting": setting,
                    "budget": budget,
                    "run_dir": str(work / f"{tool}-{setting}-{budget}-s{seed}"),
                    "target": str(target),
                    "device": device,
                    "seed": seed,
                    "train": train,
                    "pool": str(pool_npy),
                    "export": str(pool_npy) if tool == "copycat" else None,
                }
                print(f"[{tool}, {setting}] budget {budget}, seed {seed} ...", flush=True)
                res = common.run_case(SCRIPT, case, threads=args.threads)
                res.update(tool=tool, setting=setting, budget=budget, seed=seed)
                results.append(res)
                print(
                    f"    accuracy {res['accuracy']:.4f}, agreement {res['agreement']:.4f}, "
                    f"{res['wall_s']:.1f} s, {res['peak_mb']:.0f} MiB",
                    flush=True,
                )
    summary = aggregate(results)
    tc = base.train
    headers = [
        "tool",
        "training",
        "budget",
        "seeds",
        "perf. (acc)",
        "perf. (F1)",
        "agreement",
        "accuracy",
        "wall s",
        "peak MiB",
        "vs",
        "perf. x",
        "agreement x",
        "time x",
    ]
    table = [
        [
            TOOLS[r["tool"]],
            SETTINGS[r["setting"]],
            r["budget"],
            len(r["seeds"]),
            _pm(r, "performance"),
            _pm(r, "performance_f1"),
            _pm(r, "agreement"),
            _pm(r, "accuracy"),
            _pm(r, "wall_s", 1),
            r["peak_mb"],
            r["reference"] or "-",
            r["performance_ratio"],
            r["agreement_ratio"],
            r["wall_s_ratio"],
        ]
        for r in summary
    ]
    setup = (
        f"Target `{tsum['arch']}` ({tsum['epochs']} epochs, test accuracy "
        f"{tsum['test_accuracy']:.4f}). Every row: pool `{base.pool.spec}` (copycat's stream for "
        "each seed: the exact images copycat sent), copycat arch "
        f"`{tc.arch}`; mean ± sample sd over seeds {args.seeds}. copycat's training and ART "
        f"'copycat's training': AdamW lr {tc.lr} weight decay {tc.weight_decay}, one-cycle "
        f"schedule per batch, class-balanced sampling = {tc.balance}, {tc.epochs_text()}, batch "
        f"{tc.batch_size} (copycat holds out {tc.val_fraction:.0%} of its answers to pick its "
        "best epoch; ART trains on all and keeps the last). ART defaults: CopycatCNN / "
        "KnockoffNets constructor defaults (batch_size_fit=1, batch_size_query=1, nb_epochs=10) "
        "and PyTorchClassifier.fit with torch.optim.Adam at its default rate (ART sets no "
        "optimiser). ART trains on hard labels in both settings (its fit reduces probabilities "
        "to labels). Ratios (x) are means over the copycat row named in *vs*. Wall time: query "
        "+ train; ART's excludes making the pool, copycat's includes it and the answer store. "
        "Scored on the Fashion-MNIST test split; no default is chosen here."
    )
    if args.quick and args.target_epochs is None:
        setup += " (--quick: the target is trained for 2 epochs only.)"
    name = common.result_name("peers", quick=args.quick, tag=args.tag)
    md, js = common.write_results(
        args.out,
        name,
        title="Copycat against its peers at equal budget",
        sections=[("", setup), ("Results", common.md_table(headers, table))],
        data={
            "target": tsum,
            "train": dataclasses.asdict(tc),
            "summary": summary,
            "runs": results,
        },
        info=info,
        command=common.command_line(),
    )
    print(md.read_text())
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
