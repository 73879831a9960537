"""What the C allocator's settings (copycat.allocator) are worth: training and scoring speed
and peak memory of the copycat's architectures, with the settings and without, each case in
its own process.

Each case trains ``--epochs`` epochs of ``fit`` (the library's own loop, as ``copycat train``
and the steal's refits run it) on ``--train`` seeded random 28x28 grey images, scoring
``--scored`` others after each epoch as the architecture's choice does, and then times
``predict`` over the scored images alone. The answers are random, so the accuracy means
nothing; the speed does not depend on them.

    PYTHONPATH=src python benchmarks/allocator.py --threads 2
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

SCRIPT = Path(__file__).resolve()
SETTINGS = ("off", "tuned")


def parse_args() -> Any:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--archs", default="cnn-small,cnn-wide", help="architectures, comma-separated")
    p.add_argument("--train", type=int, default=4_500, help="training images (the choice's)")
    p.add_argument("--scored", type=int, default=5_000, help="images scored each epoch")
    p.add_argument("--epochs", type=int, default=2, help="epochs per case")
    p.add_argument("--repeats", type=int, default=2, help="processes per case; the best is kept")
    return p.parse_args()


def train_case(case: dict[str, Any]) -> dict[str, Any]:
    """One architecture's training and scoring, in this process's allocator setting."""
    import resource

    import torch

    from copycat.allocator import tune_allocator
    from copycat.config import TrainConfig
    from copycat.train.fit import fit, predict
    from copycat.train.models import init_model

    gen = torch.Generator().manual_seed(case["seed"])
    n, m = case["train"], case["scored"]
    images = torch.randint(0, 256, (n + m, 1, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n + m,), generator=gen)
    config = TrainConfig(arch=case["arch"], epochs=case["epochs"], seed=case["seed"])
    model = init_model(case["arch"], images[:n], num_classes=10, seed=case["seed"])
    device = torch.device(case["device"])
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    result = fit(model, images[:n], labels[:n], config=config, val=(images[n:], labels[n:]))
    fit_s = time.perf_counter() - t0
    train_s = sum(row["seconds"] for row in result.history)
    t1 = time.perf_counter()
    predict(model, images[n:], device=device)
    score_s = time.perf_counter() - t1
    return {
        "allocator": tune_allocator(),
        "fit_s": fit_s,
        "train_img_s": n * case["epochs"] / train_s,
        "score_img_s": m / score_s,
        "page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0,
        "sys_s": resource.getrusage(resource.RUSAGE_SELF).ru_stime,
    }


def main() -> None:
    args = parse_args()
    if args.case:
        common.case_main({"train": train_case})
        return
    common.setup_process(args.threads)
    info = common.machine_info(args.device, args.threads)
    device = common.resolve_device(args.device)
    rows, data = [], []
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        best: dict[str, dict[str, Any]] = {}
        for setting in SETTINGS:
            for _ in range(args.repeats):
                os.environ["COPYCAT_MALLOC_TUNING"] = setting  # read by the child at start
                case = {
                    "kind": "train",
                    "name": f"{arch}-{setting}",
                    "arch": arch,
                    "train": args.train,
                    "scored": args.scored,
                    "epochs": args.epochs,
                    "seed": args.seed,
                    "device": device,
                }
                res = common.run_case(SCRIPT, case, threads=args.threads)
                print(
                    f"{arch} {setting}: fit {res['fit_s']:.1f} s, train "
                    f"{res['train_img_s']:.0f} img/s, score {res['score_img_s']:.0f} img/s",
                    flush=True,
                )
                data.append({"arch": arch, "setting": setting, **res})
                if setting not in best or res["fit_s"] < best[setting]["fit_s"]:
                    best[setting] = res
        os.environ.pop("COPYCAT_MALLOC_TUNING", None)
        off, on = best["off"], best["tuned"]
        if on["allocator"] != "tuned":
            print(f"the settings were not applied here ({on['allocator']}): nothing to compare")
        for setting, res in (("off", off), ("tuned", on)):
            rows.append(
                [
                    arch,
                    setting,
                    res["fit_s"],
                    off["fit_s"] / res["fit_s"],
                    res["train_img_s"],
                    res["train_img_s"] / off["train_img_s"],
                    res["score_img_s"],
                    res["score_img_s"] / off["score_img_s"],
                    res["page_faults"],
                    res["sys_s"],
                    res["peak_mb"],
                ]
            )
    table = common.md_table(
        [
            "arch",
            "allocator",
            f"fit s ({args.epochs} epochs)",
            "speed-up",
            "train img/s",
            "ratio",
            "score img/s",
            "ratio",
            "page faults",
            "kernel s",
            "peak MiB",
        ],
        rows,
    )
    print(table)
    name = common.result_name("allocator", quick=args.quick, tag=args.tag)
    setup = (
        f"{args.train} training images scored on {args.scored} others each epoch, "
        f"{args.epochs} epochs, batch 128; best of {args.repeats} processes per row"
    )
    md, js = common.write_results(
        args.out,
        name,
        title="The C allocator's settings: training and scoring speed",
        sections=[("", setup), ("", table)],
        data={"cases": data, "setup": setup},
        info=info,
        command=common.command_line(),
    )
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
