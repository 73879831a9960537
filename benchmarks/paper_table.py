"""The Copycat paper's experiment on the default Fashion-MNIST target.

Every row is one run of copycat's own stages (``steal_stage``, ``train_stage``,
``evaluate_stage``: what ``copycat steal|train|evaluate`` call) with the library's default
recipe, changing one thing at a time: the query data (NPD, PD, NPD then PD fine-tuning, noise),
hard or soft labels, class balancing, query-time augmentation (and label-aware selection where
the library has it). A budget curve follows, drawn as a PNG.

    PYTHONPATH=src python benchmarks/paper_table.py --quick
    PYTHONPATH=src python benchmarks/paper_table.py --device cuda --arch vgg16 \
        --budgets 1k,2k,5k,10k,20k,50k,100k,200k
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

QUICK_BUDGET = 2_000
QUICK_BUDGETS = [1_000, 2_000, 5_000]
DEFAULT_BUDGETS = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000]


def parse_args() -> Any:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=None, help="budget of the grid's rows")
    p.add_argument("--budgets", type=common.int_list, default=None, help="the budget curve")
    p.add_argument("--arch", default=None, help="copycat architecture (default: the library's)")
    p.add_argument("--epochs", type=int, default=None, help="copycat epochs (library default)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size")
    p.add_argument("--skip-grid", action="store_true", help="only the budget curve")
    p.add_argument("--skip-curve", action="store_true", help="only the grid")
    return p.parse_args()


class Runner:
    """Runs cases through the library's stages, reusing a store where the answers are the same
    (same oracle, output, pool and steal settings): a copied store resumes at its budget."""

    def __init__(self, work: Path, target: Path, *, device: str, seed: int, train: dict) -> None:
        self.work = work
        self.target = target
        self.device = device
        self.seed = seed
        self.train = train
        self.stores: dict[str, Path] = {}

    def config(self, name: str, **changes: Any) -> Any:
        train = {**self.train, **changes.pop("train", {})}
        return common.experiment(
            self.work / name,
            self.target,
            device=self.device,
            seed=self.seed,
            train=train,
            **changes,
        )

    @staticmethod
    def answers_key(cfg: Any) -> str:
        return json.dumps(
            [cfg.oracle, cfg.output, dataclasses.asdict(cfg.pool), dataclasses.asdict(cfg.steal)],
            sort_keys=True,
            default=str,
        )

    def run(self, cfg: Any, *, seed_store: Path | None = None) -> dict[str, Any]:
        from copycat.pipeline import evaluate_stage, steal_stage, train_stage
        from copycat.runs import RunDir

        run = RunDir.at(cfg.run_dir)
        if run.root.exists():
            shutil.rmtree(run.root)
        run.root.mkdir(parents=True)
        key = self.answers_key(cfg)
        reuse = self.stores.get(key, seed_store)
        if reuse is not None and reuse.is_file():
            shutil.copy2(reuse, run.store)
        t0 = time.perf_counter()
        summary = steal_stage(cfg)
        steal_s = time.perf_counter() - t0
        self.stores[key] = run.store
        t0 = time.perf_counter()
        fit = train_stage(cfg)
        train_s = time.perf_counter() - t0
        ev = evaluate_stage(cfg)
        return {
            "run_dir": str(run.root),
            "queries": summary.answered,
            "queried_now": summary.queried_now,
            "steal_s": steal_s,
            "train_s": train_s,
            "train_samples_per_s": fit.samples_per_s,
            **eval_fields(ev),
            "seed": cfg.train.seed,
            "pool_seed": cfg.pool.seed,
            "config": {
                "output": cfg.output,
                "pool": dataclasses.asdict(cfg.pool),
                "steal": dataclasses.asdict(cfg.steal),
                "train": dataclasses.asdict(cfg.train),
            },
        }


def eval_fields(ev: Any) -> dict[str, Any]:
    return {
        "target_accuracy": ev.target_accuracy,
        "target_macro_f1": ev.target_macro_f1,
        "accuracy": ev.copycat_accuracy,
        "macro_f1": ev.copycat_macro_f1,
        "performance": ev.performance_accuracy,
        "performance_f1": ev.performance_macro_f1,
        "agreement": ev.agreement,
    }


def finetune_on_pd(runner: Runner, npd: dict[str, Any], pd: dict[str, Any]) -> dict[str, Any]:
    """The paper's NPD then PD: the NPD copycat fine-tuned on the PD run's answers with the
    library's ``fit`` (half the epochs, a third of the learning rate)."""
    from copycat.data.datasets import load_labelled
    from copycat.devices import resolve_device
    from copycat.evaluate.evaluate import evaluate
    from copycat.oracles.registry import parse_oracle_spec
    from copycat.runs import RunDir
    from copycat.steal.store import AnswerStore
    from copycat.train.checkpoint import load_copycat
    from copycat.train.fit import fit

    cfg = runner.config("npd-then-pd")
    device = resolve_device(cfg.train.device)
    model = load_copycat(RunDir.at(npd["run_dir"]))
    with AnswerStore(RunDir.at(pd["run_dir"]).store) as store:
        data = store.load()
    half = max(1, cfg.train.epochs_for(len(data)) // 2)
    tcfg = dataclasses.replace(cfg.train, epochs=half, lr=cfg.train.lr / 3)
    t0 = time.perf_counter()
    fit(model, data.images, data.labels, config=tcfg)
    train_s = time.perf_counter() - t0
    oracle = parse_oracle_spec(cfg.oracle, output="label")
    test = load_labelled(cfg.test_set, input_shape=oracle.input_shape)
    ev = evaluate(model, test_set=test, oracle=oracle, device=device)
    return {
        "run_dir": None,
        "queries": npd["queries"] + pd["queries"],
        "steal_s": npd["steal_s"] + pd["steal_s"],
        "train_s": npd["train_s"] + train_s,
        **eval_fields(ev),
        "seed": tcfg.seed,
        "pool_seed": cfg.pool.seed,
        "config": {"finetune": dataclasses.asdict(tcfg)},
    }


def grid_cases(budget: int) -> list[tuple[str, dict[str, Any]]]:
    """(label, changes to the default experiment), one change at a time."""
    from copycat.config import ExperimentConfig

    base = ExperimentConfig()
    steal = {"budget": budget}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("NPD (default recipe)", {"steal": steal}),
        (
            "PD only (Fashion-MNIST train images)",
            {"steal": steal, "pool": {"spec": "pd:fashion-mnist"}},
        ),
        ("noise", {"steal": steal, "pool": {"spec": "noise"}}),
        (
            "NPD, soft labels (oracle gives probabilities)",
            {"steal": steal, "output": "probs", "train": {"labels": "soft"}},
        ),
        (
            f"NPD, class balancing {'off' if base.train.balance else 'on'}",
            {"steal": steal, "train": {"balance": not base.train.balance}},
        ),
        (
            f"NPD, query augmentation {'off' if base.pool.augment.enabled else 'on'}",
            {"steal": steal, "augment": {"enabled": not base.pool.augment.enabled}},
        ),
    ]
    # the default selection against random and label-aware picks without synthesis
    for other in ("random", "balanced"):
        if other != base.steal.selection:
            cases.append((f"NPD, {other} selection", {"steal": {**steal, "selection": other}}))
    return cases


def describe(cfg_changes: dict[str, Any], result: dict[str, Any]) -> list[Any]:
    c = result["config"]
    if "finetune" in c:
        return ["npd → pd", "label", "hard", "-", "-"]
    return [
        c["pool"]["spec"],
        c["output"],
        c["train"]["labels"]
        if c["train"]["labels"] != "auto"
        else ("soft" if c["output"] != "label" else "hard"),
        c["train"]["balance"],
        c["pool"]["augment"]["enabled"],
    ]


def plot_curve(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = [r["queries"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(b, [r["performance"] for r in rows], "o-", label="performance (accuracy)")
    ax.plot(b, [r["performance_f1"] for r in rows], "s--", label="performance (macro-F1)")
    ax.plot(b, [r["agreement"] for r in rows], "^-", label="agreement")
    ax.set_xscale("log")
    ax.set_xlabel("budget (queries)")
    ax.set_ylabel("copycat / target")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    common.setup_process(args.threads)
    common.quiet_logging()
    from copycat.config import ExperimentConfig

    device = common.resolve_device(args.device)
    info = common.machine_info(device, args.threads)
    budget = args.budget or (QUICK_BUDGET if args.quick else ExperimentConfig().steal.budget)
    budgets = args.budgets or (QUICK_BUDGETS if args.quick else DEFAULT_BUDGETS)
    train: dict[str, Any] = {}
    if args.arch:
        train["arch"] = args.arch
    if args.epochs:
        train["epochs"] = args.epochs
    if args.batch_size:
        train["batch_size"] = args.batch_size
    target = common.bench_target(epochs=common.default_target_epochs(args), device=device)
    tsum = common.target_summary(target)
    work = common.work_dir(args, "paper")
    runner = Runner(work, target, device=device, seed=args.seed, train=train)
    recipe = runner.config("recipe")
    t_all = time.perf_counter()

    rows: list[dict[str, Any]] = []
    if not args.skip_grid:
        by_label: dict[str, dict[str, Any]] = {}
        for i, (label, changes) in enumerate(grid_cases(budget)):
            print(f"[{i + 1}] {label} ...", flush=True)
            res = runner.run(runner.config(f"grid-{i}", **json.loads(json.dumps(changes))))
            res["case"] = label
            by_label[label] = res
            rows.append(res)
            print(f"    performance {res['performance']:.3f}, agreement {res['agreement']:.3f}")
        npd, pd = rows[0], rows[1]
        print("[+] NPD then PD fine-tuning ...", flush=True)
        ft = finetune_on_pd(runner, npd, pd)
        ft["case"] = "NPD, then PD fine-tuning"
        rows.insert(2, ft)

    curve: list[dict[str, Any]] = []
    if not args.skip_curve:
        prev: Path | None = None
        for b in sorted(budgets):
            print(f"[curve] budget {b} ...", flush=True)
            res = runner.run(runner.config(f"curve-{b}", steal={"budget": b}), seed_store=prev)
            prev = Path(res["run_dir"]) / "answers.sqlite"
            curve.append({"budget": b, **res})
            print(f"    performance {res['performance']:.3f}, agreement {res['agreement']:.3f}")
    total_s = time.perf_counter() - t_all

    any_row = (rows or curve)[0]
    target_md = common.md_table(
        ["target", "epochs", "seed", "test accuracy", "test macro-F1"],
        [
            [
                tsum["arch"],
                tsum["epochs"],
                tsum["seed"],
                any_row["target_accuracy"],
                any_row["target_macro_f1"],
            ]
        ],
    )
    if args.quick and args.target_epochs is None:
        target_md += "\n\n(--quick: the target is trained for 2 epochs only.)"
    rc = recipe.train
    recipe_md = (
        f"Copycat recipe (library defaults unless overridden): arch `{rc.arch}`, "
        f"{rc.epochs_text()}, batch {rc.batch_size}, lr {rc.lr}, "
        f"balance {rc.balance}, train augmentation {rc.augment}; pool `{recipe.pool.spec}` "
        f"(query augmentation {recipe.pool.augment.enabled}), selection "
        f"`{recipe.steal.selection}`, output `{recipe.output}`; seed {args.seed}."
    )
    headers = [
        "query data / variant",
        "pool",
        "output",
        "labels",
        "balance",
        "query aug",
        "queries",
        "accuracy",
        "perf. (acc)",
        "macro-F1",
        "perf. (F1)",
        "agreement",
        "steal s",
        "train s",
    ]
    grid_rows = [
        [
            r["case"],
            *describe({}, r),
            r["queries"],
            r["accuracy"],
            r["performance"],
            r["macro_f1"],
            r["performance_f1"],
            r["agreement"],
            r["steal_s"],
            r["train_s"],
        ]
        for r in rows
    ]
    curve_rows = [
        [
            r["budget"],
            r["queries"],
            r["accuracy"],
            r["performance"],
            r["macro_f1"],
            r["performance_f1"],
            r["agreement"],
            r["steal_s"],
            r["train_s"],
        ]
        for r in curve
    ]
    name = common.result_name("paper_table", quick=args.quick, tag=args.tag)
    sections = [("Target", target_md), ("", recipe_md)]
    if rows:
        sections.append(
            (f"Copycat performance at {budget:,} queries", common.md_table(headers, grid_rows))
        )
    if curve:
        png = args.out / f"{name.replace('paper_table', 'budget_curve')}.png"
        args.out.mkdir(parents=True, exist_ok=True)
        plot_curve(curve, png, f"Copycat on Fashion-MNIST ({rc.arch}, {rc.epochs_text()})")
        sections.append(
            (
                "Budget curve (default recipe)",
                common.md_table(
                    [
                        "budget",
                        "queries",
                        "accuracy",
                        "perf. (acc)",
                        "macro-F1",
                        "perf. (F1)",
                        "agreement",
                        "steal s",
                        "train s",
                    ],
                    curve_rows,
                )
                + f"\n\n![budget curve]({png.name})",
            )
        )
    sections.append(("", f"Total wall time: {total_s:.0f} s."))
    md, js = common.write_results(
        args.out,
        name,
        title="Copycat CNN on Fashion-MNIST: the paper's experiment",
        sections=sections,
        data={"target": tsum, "budget": budget, "grid": rows, "curve": curve, "total_s": total_s},
        info=info,
        command=common.command_line(),
    )
    print(md.read_text())
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
