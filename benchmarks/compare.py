"""Methods of suite results set against a base method, seed by seed.

A median over three seeds hides how a change moved each seed; the same seed of two methods
shares its random seed share and its pool order, so the change seed by seed is the fairer
comparison. Reads the JSON files ``benchmarks/suite.py`` writes (several files may hold the
methods and the base: runs made apart on the same target build) and prints, for every target
and budget, each method's median [min-max] performance beside its change by seed from the base.

    python benchmarks/compare.py benchmarks/results/suite-emoji-refits8-20k.json --base jacobian

Results of different target builds (their weights' SHA-256 in the files) are refused: on
another build the same method scores differently, so such a change would be meaningless.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from suite import QUICK, spread
from suite import parse_args as suite_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="suite results (.json)")
    p.add_argument("--base", required=True, help="the method the others are set against")
    p.add_argument(
        "--metric",
        default="performance_accuracy",
        choices=("performance_accuracy", "agreement", "performance_macro_f1", "heldout_agreement"),
        help="the figure compared (performance: copycat accuracy / target accuracy)",
    )
    return p.parse_args(argv)


def load(files: list[Path]) -> list[dict[str, Any]]:
    """The results of every file, each target's build checked to be the same in all of them."""
    results: list[dict[str, Any]] = []
    builds: dict[str, tuple[str, Path]] = {}
    for path in files:
        try:
            data = json.loads(path.read_text())
            rows, targets = data["results"], data["targets"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(
                f"{path}: not a suite results file ({exc}); pass the .json one"
            ) from None
        for name, card in targets.items():
            sha = card.get("weights_sha256") or "-"
            seen = builds.setdefault(name, (sha, path))
            if seen[0] != sha:
                raise SystemExit(
                    f"target {name}: {path} used the build {sha[:12]}, {seen[1]} the build "
                    f"{seen[0][:12]}; compare results of one build (rerun the base on it)"
                )
        suffix = training_changes(data.get("command", ""))
        results.extend({**r, "method": r["method"] + suffix} for r in rows)
    return results


def training_changes(command: str) -> str:
    """The copycats' training options of a run (read back from its command line), as a suffix
    of its method names: the same method trained otherwise is another row."""
    words = shlex.split(command)
    script = next((i for i, w in enumerate(words) if w.endswith("suite.py")), None)
    if script is None:
        return ""
    args = suite_args(words[script + 1 :])
    epochs = args.copycat_epochs or (QUICK["copycat_epochs"] if args.quick else None)
    changes = {
        "epochs": epochs,
        "min_steps": args.copycat_min_steps,
        **(args.copycat_set or {}),
    }
    said = ", ".join(f"{k} {v}" for k, v in changes.items() if v is not None)
    return f" ({said})" if said else ""


def table(results: list[dict[str, Any]], *, base: str, metric: str) -> str:
    """One row per target x budget x method: median [min-max], change by seed from ``base``."""
    value: dict[tuple[str, int, str], dict[int, float]] = {}
    for r in results:
        for point in r["points"]:
            key = (r["target"], point["answers"], r["method"])
            seen = value.setdefault(key, {})
            if r["seed"] in seen:
                raise SystemExit(
                    f"{r['target']} {r['method']} seed {r['seed']} at {point['answers']:,} "
                    "answers is in two of the files; pass one of them"
                )
            seen[r["seed"]] = point[metric]
    if not any(method == base for _, _, method in value):
        methods = sorted({m for _, _, m in value})
        raise SystemExit(f"--base {base}: no results of it; the files hold {methods}")
    rows = []
    for (target, answers, method), by_seed in sorted(value.items()):
        ref = value.get((target, answers, base), {})
        seeds = sorted(by_seed)
        change = "(base)"
        if method != base:
            change = ", ".join(f"{by_seed[s] - ref[s]:+.3f}" if s in ref else "n/a" for s in seeds)
        rows.append(
            [
                target,
                f"{answers:,}",
                method,
                spread([by_seed[s] for s in seeds]),
                ", ".join(str(s) for s in seeds),
                change,
            ]
        )
    return common.md_table(
        ["target", "queries", "method", metric, "seeds", f"change by seed from {base}"], rows
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(table(load(args.files), base=args.base, metric=args.metric))


if __name__ == "__main__":
    sys.exit(main())
