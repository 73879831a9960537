"""Steal strength across the development suite: target x method x budget -> performance,
agreement, queries to reach 0.90 / 0.95 of the target, wall seconds; median and spread over
seeds.

Each (target, method, seed) is one steal of the largest budget with the target's NPD pool and
top-1 labels, then its budget curve (``copycat curve``): copycats trained on the first N answers
in query order and scored against the target on the ``--split`` of the target's labelled set
(``val`` by default: choose defaults on it; score ``test`` once, for the README). A method is a
set of configuration changes (see ``METHODS``); add one there to compare it.

    python benchmarks/suite.py --quick                       # minutes on 2 CPU cores
    python benchmarks/suite.py --seeds 3 --budgets 1k,2k,5k,10k,20k
    python benchmarks/suite.py --seeds 3 --split test        # once, for the README
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

# name -> configuration changes by section (as common.experiment takes them). Methods from the
# attack side (query synthesis, semi-supervised training, distillation) are added here by name.
# A "npd" section names the NPD sets the pool draws from, equally or by its "weights" (the
# default: clip-art, and pen strokes beside it for grey targets).
FILE_SETS = ("clipart", "stamps", "sprites", "photos")
METHODS: dict[str, dict[str, dict[str, Any]]] = {
    # the baselines keep the pool they were measured with (clip-art alone), whatever the default
    # pool becomes: `balanced` is the "today's recipe" (since e17ee3a, until pinned here,
    # they drew pen strokes beside clip-art for grey targets, like the default)
    "random": {"steal": {"selection": "random"}, "npd": {"sets": ("clipart",)}},
    "balanced": {"steal": {"selection": "balanced"}, "npd": {"sets": ("clipart",)}},
    # the other NPD sets: Tux Paint stamps and Scratch sprites (objects), wallpaper crops
    "balanced-objects": {
        "steal": {"selection": "balanced"},
        "npd": {"sets": ("clipart", "stamps", "sprites")},
    },
    # the four sets of files ("all" also holds the drawn sets, which came after these runs)
    "balanced-all": {"steal": {"selection": "balanced"}, "npd": {"sets": FILE_SETS}},
    "balanced-photos": {"steal": {"selection": "balanced"}, "npd": {"sets": ("photos",)}},
    # Knockoff Nets' adaptive policy over the pool's folders, then balanced picks
    "adaptive": {"steal": {"selection": "adaptive"}},
    "adaptive-all": {"steal": {"selection": "adaptive"}, "npd": {"sets": FILE_SETS}},
    # the random seed share capped at 1,000 answers, refits each time the answers double
    "balanced-doubling": {"steal": {"selection": "balanced", "seed_max": 1000}},
    # the procedural sets beside clip-art: pen strokes, filled shapes, or both
    "random-strokes": {"steal": {"selection": "random"}, "npd": {"sets": ("clipart", "strokes")}},
    "balanced-strokes": {
        "steal": {"selection": "balanced"},
        "npd": {"sets": ("clipart", "strokes")},
    },
    "balanced-shapes": {"steal": {"selection": "balanced"}, "npd": {"sets": ("clipart", "shapes")}},
    "balanced-drawn": {
        "steal": {"selection": "balanced"},
        "npd": {"sets": ("clipart", "strokes", "shapes")},
    },
    # query synthesis (copycat.steal.synthesis): pool images pushed toward rare classes by
    # gradient steps on the interim copycat, or mixes of answers from different classes
    "jacobian": {"steal": {"selection": "jacobian"}},
    "mixup": {"steal": {"selection": "mixup"}},
    # jacobian whose pushes cross the interim copycat's nearest boundary when the image is
    # already in the class it was picked for
    "boundary": {"steal": {"selection": "boundary"}},
    # jacobian with a quarter of the budget as the random seed share (half by default)
    "jacobian-seed25": {"steal": {"selection": "jacobian", "seed_fraction": 0.25}},
    # the packed sets beside clip-art: GCompris' photos and Sweet Home 3D's furniture renders
    "jacobian-packed": {
        "steal": {"selection": "jacobian"},
        "npd": {"sets": ("clipart", "gcompris", "furniture")},
    },
    # not an NPD steal: random images of the target's own training split (labels discarded),
    # the ceiling an NPD pool is measured against
    "random-pd": {"steal": {"selection": "random"}, "pd": {"pool": True}},
    # jacobian with half of the pool images sent whole (no crop, rotation or jitter)
    "jacobian-whole50": {"steal": {"selection": "jacobian"}, "augment": {"whole": 0.5}},
    # jacobian with crops from 15% (not 30%) of the image's area
    "jacobian-scale15": {"steal": {"selection": "jacobian"}, "augment": {"scale": (0.15, 1.0)}},
    # colour targets: hue turned at random (any hue), or a mild hue and saturation jitter
    "jacobian-hue": {"steal": {"selection": "jacobian"}, "augment": {"hue": 0.5}},
    "jacobian-colour": {
        "steal": {"selection": "jacobian"},
        "augment": {"hue": 0.1, "saturation": 0.5},
    },
    "jacobian-strokes": {
        "steal": {"selection": "jacobian"},
        "npd": {"sets": ("clipart", "strokes")},
    },
    # the default on clip-art alone (a grey target's default pool before e17ee3a)
    "jacobian-clipart": {"steal": {"selection": "jacobian"}, "npd": {"sets": ("clipart",)}},
    # the default with its sets' shares moved toward the set whose answers give the rare
    # classes (steal.set_weights = "yield")
    "jacobian-yield": {"steal": {"selection": "jacobian", "set_weights": "yield"}},
    # the same in the seed share only: the picks after it among all the pool's candidates
    "jacobian-yieldseed": {"steal": {"selection": "jacobian", "set_weights": "yield-seed"}},
    # as jacobian-yield, the set of highest yield taking all the draws but the floor
    "jacobian-top": {"steal": {"selection": "jacobian", "set_weights": "top"}},
    # the same with ten pool candidates per query, so that the winning set of two still gives
    # the interim copycat five per query to pick among after the thinning
    "jacobian-top-x10": {
        "steal": {"selection": "jacobian", "set_weights": "top", "candidates_per_query": 10}
    },
    # the same with balanced's two fresh fits of the interim copycat instead of eight warm ones
    "jacobian-top-fresh2": {
        "steal": {
            "selection": "jacobian",
            "set_weights": "top",
            "refits": 2,
            "warm_refits": False,
        }
    },
    # the pool's mix, except that the pen strokes drop to the floor where their rare yield is
    # below clip-art's (steal.set_weights = "earned"); thinned picks still see five per query
    "jacobian-earned": {"steal": {"selection": "jacobian", "set_weights": "earned"}},
    # the pool's own mix at every budget: the default up to set_weights = "auto" (which is
    # "earned" up to 5,000 queries and this above)
    "jacobian-pool": {"steal": {"selection": "jacobian", "set_weights": "pool"}},
    # pen strokes as a quarter of the pool instead of half
    "jacobian-strokes25": {
        "steal": {"selection": "jacobian"},
        "npd": {"sets": ("clipart", "strokes"), "weights": (3.0, 1.0)},
    },
    # the best 2,000-query digits recipe of the third build (with --copycat-set
    # val_fraction=0): strokes beside clip-art, synthesis from the end of the seed share
    "jacobian-strokes-early": {
        "steal": {"selection": "jacobian", "synth_from": 0},
        "npd": {"sets": ("clipart", "strokes")},
    },
    # pen strokes alone, and strokes beside every set of objects (a handwriting target's pools)
    "jacobian-strokes-only": {"steal": {"selection": "jacobian"}, "npd": {"sets": ("strokes",)}},
    "jacobian-strokes-objects": {
        "steal": {"selection": "jacobian"},
        "npd": {"sets": ("clipart", "stamps", "sprites", "strokes")},
    },
    # jacobian's synthesis knobs (steal.synth_share, synth_steps, synth_step_size, refits), one
    # at a time from the default (0.5 of each batch synthesized, 6 steps of 0.03, 4 refits)
    "jacobian-synth25": {"steal": {"selection": "jacobian", "synth_share": 0.25}},
    "jacobian-synth75": {"steal": {"selection": "jacobian", "synth_share": 0.75}},
    "jacobian-steps12": {"steal": {"selection": "jacobian", "synth_steps": 12}},
    "jacobian-step06": {"steal": {"selection": "jacobian", "synth_step_size": 0.06}},
    "jacobian-refits8": {"steal": {"selection": "jacobian", "refits": 8}},
    # jacobian with each refit of the interim copycat started afresh, as balanced's are
    "jacobian-fresh": {"steal": {"selection": "jacobian", "warm_refits": False}},
    # every warm refit on every answer: the default (named so while 5,000 was, at da02cac)
    "jacobian-refitall": {"steal": {"selection": "jacobian", "refit_answers": None}},
    # warm refits on at most 5,000 / 10,000 answers (steal.refit_answers)
    "jacobian-refit5k": {"steal": {"selection": "jacobian", "refit_answers": 5_000}},
    "jacobian-refit10k": {"steal": {"selection": "jacobian", "refit_answers": 10_000}},
    # jacobian's own refits until 799ebf1 (8 since: jacobian-refits8 is the default now)
    "jacobian-refits4": {"steal": {"selection": "jacobian", "refits": 4}},
    # twice the default's refits again: 16 fits of the interim copycat
    "jacobian-refits16": {"steal": {"selection": "jacobian", "refits": 16}},
    # one refit per 1,250 answers after the seed share, as the default's 8 are at 20,000
    # queries: 2 at 5,000 queries, 1 (the seed fit alone) at 2,000
    "jacobian-refits2": {"steal": {"selection": "jacobian", "refits": 2}},
    "jacobian-refits1": {"steal": {"selection": "jacobian", "refits": 1}},
    # three times the default's pool candidates per query (15, not 5) to pick and push from
    "jacobian-x15": {"steal": {"selection": "jacobian", "candidates_per_query": 15}},
    # no synthesis before 5,000 answers: below that, jacobian's balanced picks among pool
    # images alone (with its 8 refits); the default since it was measured, and
    # jacobian-synth-early the default before (synthesis from the end of the seed share)
    "jacobian-synthfrom5k": {"steal": {"selection": "jacobian", "synth_from": 5000}},
    "jacobian-synth-early": {"steal": {"selection": "jacobian", "synth_from": 0}},
    # pushes go on until the interim copycat is 90% sure (12 steps at most), not just past its
    # boundary, where the target may well disagree
    "jacobian-sure90": {
        "steal": {"selection": "jacobian", "synth_confidence": 0.9, "synth_steps": 12}
    },
    # the knobs on a handwriting pool (digits' fastest so far) and on every object set
    "jacobian-strokes-refits8": {
        "steal": {"selection": "jacobian", "refits": 8},
        "npd": {"sets": ("clipart", "strokes")},
    },
    "jacobian-strokes-seed25": {
        "steal": {"selection": "jacobian", "seed_fraction": 0.25},
        "npd": {"sets": ("clipart", "strokes")},
    },
    # at 2,000 queries the interim copycat can refit only between batches (256): half-size
    # batches let refits = 8 happen
    "jacobian-strokes-b128": {
        "steal": {"selection": "jacobian", "refits": 8, "batch_size": 128},
        "npd": {"sets": ("clipart", "strokes")},
    },
    "jacobian-objects": {
        "steal": {"selection": "jacobian"},
        "npd": {"sets": ("clipart", "stamps", "sprites")},
    },
    # Oxygen's icons beside clip-art (oxygen-icon-theme)
    "jacobian-icons": {
        "steal": {"selection": "jacobian"},
        "npd": {"sets": ("clipart", "icons")},
    },
}
QUICK = {"budgets": "500,1k,2k", "copycat_epochs": 4, "seeds": 1}
FULL = {"budgets": "1k,2k,5k,10k,20k", "copycat_epochs": None, "seeds": 3}


def parse_args(argv: list[str] | None = None) -> Any:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--targets", default="fmnist,digits,emoji", help="suite targets to steal")
    p.add_argument("--methods", default="random,balanced", help=f"of {', '.join(METHODS)}")
    p.add_argument("--budgets", default=None, help="e.g. 1k,2k,5k,10k,20k")
    p.add_argument("--seeds", type=int, default=None, help="seeds per case (median, spread)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="seeds run from this one (to add seeds)"
    )
    p.add_argument("--split", choices=("val", "test"), default="val", help="split to score on")
    p.add_argument("--copycat-epochs", type=int, default=None, help="copycat training epochs")
    p.add_argument(
        "--copycat-min-steps", type=int, default=None, help="copycat training's min_steps"
    )
    p.add_argument(
        "--copycat-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other [train] field of the copycats, e.g. val_fraction=0 or arch=cnn-wide "
        "(TOML values; repeat for more)",
    )
    p.add_argument(
        "--copycat-ensemble",
        type=int,
        default=1,
        metavar="N",
        help="also score N single copycats of the largest budget (seeds s, s+1000, ...), each "
        "alone and their mean probabilities (the library's ensemble, scored as one: "
        "--copycat-set ensemble=N)",
    )
    p.add_argument("--targets-dir", type=Path, default=None, help="where suite targets live")
    args = p.parse_args(argv)
    args.copycat_set = train_changes(args.copycat_set, p)
    return args


def train_changes(items: list[str], parser: Any) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as [train] changes, values read as TOML (``0``, ``"cnn-wide"`` or a
    bare word), checked against TrainConfig so a typo stops the run before any query."""
    import tomllib

    from copycat.config import TrainConfig, from_dict
    from copycat.errors import ConfigError

    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--copycat-set {item!r}: expected KEY=VALUE, e.g. val_fraction=0")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word: cnn-wide
        changes[key.strip()] = value
    try:
        checked = from_dict(TrainConfig, changes, where="train")
    except ConfigError as exc:
        parser.error(f"--copycat-set: {exc}")
    return {k: getattr(checked, k) for k in changes}  # coerced: val_fraction=0 -> 0.0


def suite_targets(args: Any, names: list[str]) -> dict[str, Path]:
    """The suite's targets, trained once into a cache folder (quick ones apart)."""
    from copycat.targets.suite import build_suite

    root = args.targets_dir or (
        common.cache_root().parent / ("bench-suite-quick" if args.quick else "bench-suite")
    )
    t0 = time.perf_counter()
    # the demo's shipped target is the suite's Fashion-MNIST (its card says so); quick targets
    # are a recipe of their own
    shipped = {"fmnist": Path(__file__).resolve().parents[1] / "targets" / "fmnist"}
    build_suite(
        root,
        names=tuple(names),
        quick=args.quick,
        device=args.device,
        seed=0,
        reuse=None if args.quick else shipped,
    )
    print(f"targets ready in {time.perf_counter() - t0:.0f} s under {root}", flush=True)
    return {n: root / n for n in names}


def one_case(
    target: Any,
    folder: Path,
    method: str,
    seed: int,
    budgets: tuple[int, ...],
    args: Any,
    *,
    work: Path,
) -> dict[str, Any]:
    """Steal the largest budget, then the budget curve of that run."""
    from copycat.evaluate.curve import GOALS, queries_to_reach
    from copycat.pipeline import curve_stage, steal_stage

    run = work / f"{target.name}-{method}-s{seed}"
    changes = {k: dict(v) for k, v in METHODS[method].items()}
    npd = changes.pop("npd", {})
    sets, weights = npd.get("sets", ()), npd.get("weights", ())
    pd = changes.pop("pd", {}).get("pool", False)
    # a "pd" method queries the target's own training images: a ceiling, not an NPD steal
    spec = f"pd:{target.dataset}" if pd else target.npd_pool_of(sets, weights)
    changes.setdefault("pool", {})["spec"] = spec
    changes.setdefault("steal", {})["budget"] = max(budgets)
    if args.copycat_epochs:
        changes.setdefault("train", {})["epochs"] = args.copycat_epochs
    if args.copycat_min_steps is not None:
        changes.setdefault("train", {})["min_steps"] = args.copycat_min_steps
    changes.setdefault("train", {}).update(args.copycat_set)
    cfg = common.experiment(run, folder, device=args.device, seed=seed, **changes)
    cfg = dataclasses.replace(cfg, test_set=f"{target.dataset}:{args.split}")
    t0 = time.perf_counter()
    summary = steal_stage(cfg)
    steal_s = time.perf_counter() - t0
    ensemble: dict[str, Any] | None = None
    if args.copycat_ensemble > 1:
        # the largest budget's point is the ensemble's first member (the copy the curve would
        # train), so it is not trained twice
        below = tuple(b for b in budgets if b < max(budgets))
        points = list(curve_stage(cfg, budgets=below).points) if below else []
        first, ensemble, target_accuracy = ensemble_case(cfg, args.copycat_ensemble)
        points.append(first)
    else:
        curve = curve_stage(cfg, budgets=budgets)
        points, target_accuracy = list(curve.points), curve.target_accuracy
    hist = summary.label_histogram
    return {
        "target": target.name,
        "method": method,
        "seed": seed,
        "steal_s": steal_s,
        # a finished run of the same steal under --work is reused: nothing sent this time
        "steal_reused": summary.queried_now == 0,
        "rarest_share": min(hist) / max(1, sum(hist)),
        "target_accuracy": target_accuracy,
        "queries_to": {f"{g:.2f}": queries_to_reach(points, g) for g in GOALS},
        "points": [
            {
                **dataclasses.asdict(p),
                # the cost of this point alone: its share of the steal plus its training
                "wall_s": steal_s * p.answers / max(budgets) + p.train_seconds,
            }
            for p in points
        ],
        **({"ensemble": ensemble} if ensemble else {}),
    }


def ensemble_case(cfg: Any, n: int) -> tuple[Any, dict[str, Any], float]:
    """``n`` copycats of the whole store (seeds ``s + 1000 i``), each scored alone and their
    mean probabilities scored together: (the first member's curve point, the ensemble's
    record, the target's accuracy on the test set)."""
    import torch

    from copycat.data.datasets import load_labelled
    from copycat.devices import resolve_device
    from copycat.evaluate.curve import CurvePoint, fit_prefix
    from copycat.evaluate.evaluate import oracle_labels
    from copycat.evaluate.metrics import classification_metrics
    from copycat.oracles.registry import parse_oracle_spec
    from copycat.pipeline.train import semi_images
    from copycat.runs import RunDir
    from copycat.steal.store import AnswerStore
    from copycat.train.copies import member_config
    from copycat.train.fit import predict

    oracle = parse_oracle_spec(cfg.oracle, output="label")
    with AnswerStore(RunDir.at(cfg.run_dir).store) as store:
        data = store.load()
        k = int(store.meta()["num_classes"])
    test = load_labelled(cfg.test_set, input_shape=oracle.input_shape)
    target_pred = oracle_labels(oracle, test.images)
    t = classification_metrics(test.labels, target_pred, num_classes=k)
    unlabelled = semi_images(RunDir.at(cfg.run_dir), cfg)  # once, for every member

    def scored(probs: torch.Tensor) -> tuple[float, float, float]:
        pred = probs.argmax(1)
        c = classification_metrics(test.labels, pred, num_classes=k)
        agreement = float((pred == target_pred).float().mean())
        return c.accuracy / t.accuracy, c.macro_f1 / t.macro_f1, agreement

    device = resolve_device(cfg.train.device)
    members, total, seconds = [], torch.zeros(len(test), k), 0.0
    first: CurvePoint | None = None
    for i in range(n):
        # each member a single copy, whatever [train] ensemble says, so each is scored alone
        train = dataclasses.replace(member_config(cfg.train, i), ensemble=1)
        model, fitted, arch = fit_prefix(
            data.images, data.labels, num_classes=k, config=train, unlabelled=unlabelled
        )
        s = fitted.seconds
        probs = predict(model.to(device), test.images, device=device).softmax(1)
        total += probs
        seconds += s
        perf, f1, agreement = scored(probs)
        members.append({"performance_accuracy": perf, "agreement": agreement, "train_s": s})
        if first is None:
            first = CurvePoint(
                answers=len(data.labels),
                copycat_accuracy=perf * t.accuracy,
                performance_accuracy=perf,
                performance_macro_f1=f1,
                agreement=agreement,
                train_seconds=s,
                heldout_agreement=fitted.best_val_agreement,
                arch=arch,
            )
    perf, f1, agreement = scored(total / n)
    record = {
        "members": members,
        "performance_accuracy": perf,
        "performance_macro_f1": f1,
        "agreement": agreement,
        "train_s": seconds,
    }
    assert first is not None
    return first, record, t.accuracy


def default_or(value: int | None) -> str:
    return "default" if value is None else str(value)


def spread(values: list[float]) -> str:
    """``median [min-max]`` (just the value for one seed)."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.3f}"
    return f"{med:.3f} [{min(values):.3f}-{max(values):.3f}]"


def reach(values: list[int | None], top: int) -> str:
    """Median queries to a goal over seeds; a seed that never reaches it counts as infinite."""
    inf = float("inf")
    med = statistics.median([inf if v is None else v for v in values])
    got = sum(v is not None for v in values)
    text = f"> {top:,}" if med == inf else f"{int(med):,}"
    return text if len(values) == 1 else f"{text} ({got}/{len(values)} seeds)"


def heldout(points: list[dict[str, Any]]) -> str:
    """The copies' agreement on the held-out share of their answers (none held out, or a
    results file that predates it: "-")."""
    values = [p.get("heldout_agreement") for p in points]
    return "-" if None in values else spread([float(v) for v in values if v is not None])


def tables(results: list[dict[str, Any]], budgets: tuple[int, ...]) -> tuple[str, str]:
    by_case: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault((r["target"], r["method"]), []).append(r)
    rows, heads = [], []
    for (tname, method), runs in by_case.items():
        for b in budgets:
            pts = [p for r in runs for p in r["points"] if p["answers"] == b]
            if not pts:
                continue
            rows.append(
                [
                    tname,
                    method,
                    b,
                    spread([p["performance_accuracy"] for p in pts]),
                    spread([p["agreement"] for p in pts]),
                    heldout(pts),
                    spread([p["wall_s"] for p in pts]),
                ]
            )
        heads.append(
            [
                tname,
                method,
                spread([r["target_accuracy"] for r in runs]),
                reach([r["queries_to"]["0.90"] for r in runs], max(budgets)),
                reach([r["queries_to"]["0.95"] for r in runs], max(budgets)),
                spread([100 * r["rarest_share"] for r in runs]),
                spread([r["steal_s"] for r in runs]),
            ]
        )
    grid = common.md_table(
        [
            "target",
            "method",
            "queries",
            "performance (acc)",
            "agreement",
            "held-out agreement",
            "wall s",
        ],
        rows,
    )
    head = common.md_table(
        [
            "target",
            "method",
            "target acc (split)",
            "queries to 0.90",
            "queries to 0.95",
            "rarest class %",
            "steal s",
        ],
        heads,
    )
    return head, grid


def ensemble_table(results: list[dict[str, Any]]) -> str:
    """The first copycat alone against the ensemble of the largest budget, per seed."""
    by_case: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if "ensemble" in r:
            by_case.setdefault((r["target"], r["method"]), []).append(r)
    rows = []
    for (tname, method), runs in by_case.items():
        alone = [r["points"][-1]["performance_accuracy"] for r in runs]
        together = [r["ensemble"]["performance_accuracy"] for r in runs]
        rows.append(
            [
                tname,
                method,
                len(runs[0]["ensemble"]["members"]),
                spread(alone),
                spread(together),
                ", ".join(f"{b - a:+.3f}" for a, b in zip(alone, together, strict=True)),
                spread([r["points"][-1]["agreement"] for r in runs]),
                spread([r["ensemble"]["agreement"] for r in runs]),
                spread([r["ensemble"]["train_s"] for r in runs]),
            ]
        )
    return common.md_table(
        [
            "target",
            "method",
            "copycats",
            "performance, first alone",
            "performance, ensemble",
            "change by seed",
            "agreement, alone",
            "agreement, ensemble",
            "training s (all)",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    from copycat.evaluate.curve import parse_budgets
    from copycat.targets.suite import suite_target

    args = parse_args(argv)
    common.quiet_logging()
    common.setup_process(args.threads)
    preset = QUICK if args.quick else FULL
    budgets = parse_budgets(args.budgets or str(preset["budgets"]))
    seeds = args.seeds or int(preset["seeds"])
    if args.copycat_epochs is None:
        args.copycat_epochs = preset["copycat_epochs"]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    args.device = common.resolve_device(args.device)
    t_all = time.perf_counter()
    folders = suite_targets(args, names)
    work = common.work_dir(args, "suite")
    results = []
    for name in names:
        target = suite_target(name)
        for method in methods:
            for seed in range(args.first_seed, args.first_seed + seeds):
                t0 = time.perf_counter()
                r = one_case(target, folders[name], method, seed, budgets, args, work=work)
                last = r["points"][-1]
                print(
                    f"{name:7s} {method:9s} seed {seed}: {last['answers']} answers, performance "
                    f"{last['performance_accuracy']:.3f}, agreement {last['agreement']:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
                results.append(r)
                # written after every case, so a run cut short keeps what it measured
                save(args, results, budgets, folders, seeds, time.perf_counter() - t_all)
    head, grid = tables(results, budgets)
    print("\n" + head + "\n\n" + grid + f"\n\ntotal {time.perf_counter() - t_all:.0f} s")


def save(
    args: Any,
    results: list[dict[str, Any]],
    budgets: tuple[int, ...],
    folders: dict[str, Path],
    seeds: int,
    total: float,
) -> None:
    """Write ``suite[-quick][-TAG].md`` and ``.json`` under ``--out``."""
    head, grid = tables(results, budgets)
    reused = sum(bool(r.get("steal_reused")) for r in results)
    note = (
        f" {reused} steal(s) reused from finished runs under --work: their steal seconds and "
        "wall seconds count none of the querying."
        if reused
        else ""
    )
    info = common.machine_info(args.device, args.threads)
    cards = {n: common.target_summary(f) for n, f in folders.items()}
    target_head = ["target", "arch", "epochs", "test acc", "weights SHA-256"]
    target_rows = [
        [n, c["arch"], c["epochs"], c["test_accuracy"], (c["weights_sha256"] or "-")[:12]]
        for n, c in cards.items()
    ]
    common.write_results(
        args.out,
        common.result_name("suite", quick=args.quick, tag=args.tag),
        title=f"Steal strength across the suite (NPD pool, top-1 labels, split {args.split})",
        sections=[
            ("Targets", common.md_table(target_head, target_rows)),
            ("Queries to reach 0.90 / 0.95 of the target", head),
            ("By budget (median [min-max] over seeds)", grid),
            *(
                [("Ensembles of the largest budget", ensemble_table(results))]
                if any("ensemble" in r for r in results)
                else []
            ),
            ("", f"Wall time so far: {total:.0f} s; {len(results)} case(s) of "
                 f"{seeds} seed(s) each; copycat epochs {default_or(args.copycat_epochs)}, "
                 f"min steps {default_or(args.copycat_min_steps)}"
                 + "".join(f", {k} {v}" for k, v in args.copycat_set.items())
                 + "." + note),
        ],
        data={"budgets": list(budgets), "split": args.split, "seeds": seeds,
              "targets": cards, "results": results, "total_s": total,
              "copycat_set": args.copycat_set, "copycat_ensemble": args.copycat_ensemble},
        info=info,
        command=common.command_line(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
