"""What ``arch = "auto"`` chooses for the copy of each run, without training the copy.

For every run directory given, trains the candidates of :mod:`copycat.train.choose` on the
first answers of its store (as ``copycat train`` would) and prints each candidate's held-out
agreement and the choice; a colour store or a named ``--arch`` prints no training. Compare the
choice with copies of each architecture trained on the same answers (``benchmarks/suite.py
--copycat-set arch=...``) to see whether it picked the better one.

    python benchmarks/arch_choice.py W/suite/fmnist-wide-jacobian-s0 W/suite/fmnist-wide-jacobian-s1
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories holding answers.sqlite")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the run's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="also write arch-choice[-TAG].md/json")
    p.add_argument("--tag", default="", help="suffix of the results files")
    args = p.parse_args(argv)

    import torch

    from copycat.config import TrainConfig, from_dict
    from copycat.runs import RunDir
    from copycat.steal.store import AnswerStore
    from copycat.train.choose import choose_arch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for folder in args.runs:
        run = RunDir.at(folder)
        if not run.store.is_file():
            raise SystemExit(f"{folder}: no answers.sqlite; give run directories of steals")
        recorded = run.read_config()
        config = from_dict(TrainConfig, recorded["train"]) if "train" in recorded else TrainConfig()
        # a steal alone (benchmarks/suite.py's runs) records no training: its copies train on
        # the pool's seed
        seed = config.seed if "train" in recorded else recorded["steal"]["pool"]["seed"]
        if args.seed is not None:
            seed = args.seed
        config = dataclasses.replace(config, arch="auto", device="cpu", seed=int(seed))
        with AnswerStore(run.store) as store:
            data = store.load()
            k = int(store.meta()["num_classes"])
        t0 = time.perf_counter()
        choice = choose_arch(data.images, data.labels, num_classes=k, config=config)
        held = ", ".join(f"{a} {v:.3f}" for a, v in choice.heldout.items()) or "-"
        seconds = time.perf_counter() - t0
        counts = [len(data.labels), choice.trained, choice.scored]
        rows.append([str(folder), *counts, held, choice.arch, seconds])
    header = ["run", "answers", "trained on", "scored on", "agreement", "chosen", "seconds"]
    table = common.md_table(header, rows)
    print(table)
    if args.out:
        common.write_results(
            args.out,
            common.result_name("arch-choice", quick=False, tag=args.tag),
            title="What arch auto chooses for each run's copy",
            sections=[("", table)],
            data={"rows": rows},
            info=common.machine_info("cpu", args.threads),
            command=common.command_line(),
        )


if __name__ == "__main__":
    main()
