"""Which NPD set of a mixed pool gives a target's rare classes: read from the answers alone.

For each steal's store (``answers.sqlite`` of a run directory, e.g. under a suite ``--work``
folder), the first ``--first`` answers (the start of the random seed share, drawn from every set
by the pool's weights) are split by the NPD set each image came from. A class is *rare* when it
holds under ``--rare`` of its fair share (``1/K``) of those answers; a set's *rare yield* is the
fraction of its answers whose label is a rare class. The set with the higher yield is the one a
thief would draw more of to cover the classes the copy lacks: a signal a steal can read after a
few hundred answers, with no label of the target's own data.

    python benchmarks/set_yield.py W/suite/*-jacobian-s*/answers.sqlite --first 500

Prints one row per store and a summary per target and method (run directories are named
``TARGET-METHOD-sSEED`` by ``benchmarks/suite.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from copycat.steal.selection import rare_yields
from copycat.steal.store import AnswerStore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stores", nargs="+", type=Path, help="answers.sqlite files")
    p.add_argument("--first", type=int, default=500, help="answers read from each store")
    p.add_argument(
        "--rare", type=float, default=0.5, help="a class under this fraction of 1/K is rare"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows, wins = [], defaultdict(Counter)
    for path in dict.fromkeys(p.resolve() for p in args.stores):  # each store once
        if not path.is_file():
            raise SystemExit(f"{path}: no such store; give the answers.sqlite of a run directory")
        with AnswerStore(path) as store:
            k = int(store.meta()["num_classes"])
            first = store.labels_and_sources()[: args.first]
        rare_classes, per_set = rare_yields(first, k, rare=args.rare)
        run = path.parent.name
        case = re.sub(r"-s\d+$", "", run)
        y = {s: hits / n for s, (n, hits) in per_set.items()}
        best = max(y, key=lambda s: y[s]) if len(y) > 1 else "-"
        wins[case][best] += 1
        cells = ", ".join(f"{s} {per_set[s][0]} / {y[s]:.3f}" for s in sorted(y))
        rows.append([run, " ".join(map(str, rare_classes)), cells, best])
    print(common.md_table(["store", "rare classes", "set: answers / rare yield", "higher"], rows))
    print()
    summary = [
        [case, ", ".join(f"{s} {n}" for s, n in w.most_common())] for case, w in wins.items()
    ]
    print(
        common.md_table(
            ["target-method", "stores in which each set's rare yield is higher"], summary
        )
    )


if __name__ == "__main__":
    sys.exit(main())
