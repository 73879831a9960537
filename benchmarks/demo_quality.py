"""Copy quality of the default recipe by pool and budget, and the wall time of `make demo`.

Rows: the query data (NPD only, PD only, NPD + PD, noise); columns: budgets (1k, 5k, 20k by
default). Every cell is one run of copycat's own stages with the library's defaults, against the
default Fashion-MNIST target. ``--demo`` also times ``make demo`` from scratch in a fresh run and
target folder (the set-up step included, when the virtual environment is already built).

    python benchmarks/demo_quality.py                  # the default grid (~25 min, 2 CPU cores)
    python benchmarks/demo_quality.py --quick          # 1k and 5k, NPD and PD only
    python benchmarks/demo_quality.py --demo --skip-grid
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from paper_table import Runner

POOLS = [
    ("NPD only", "npd"),
    ("PD only", "pd:fashion-mnist"),
    ("NPD + PD", "npd+pd:fashion-mnist"),
    ("noise", "noise"),
]


def time_demo(work: Path) -> dict[str, Any]:
    """Run ``make demo`` into fresh folders; returns its wall time and exit status."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["make", "demo", f"TARGET={work / 'target'}", f"RUN={work / 'demo-run'}"],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "wall_s": time.perf_counter() - t0,
        "returncode": proc.returncode,
        "tail": proc.stdout[-2000:] + proc.stderr[-2000:],
    }


def main() -> None:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--budgets", type=common.int_list, default=None, help="budget columns")
    p.add_argument("--demo", action="store_true", help="also time `make demo` from scratch")
    p.add_argument("--skip-grid", action="store_true", help="only time the demo")
    args = p.parse_args()
    common.setup_process(args.threads)
    common.quiet_logging()
    device = common.resolve_device(args.device)
    info = common.machine_info(device, args.threads)
    budgets = args.budgets or ([1_000, 5_000] if args.quick else [1_000, 5_000, 20_000])
    pools = POOLS[:2] if args.quick else POOLS
    sections: list[tuple[str, str]] = []
    data: dict[str, Any] = {"budgets": budgets, "rows": []}
    if not args.skip_grid:
        target = common.bench_target(epochs=common.default_target_epochs(args), device=device)
        tsum = common.target_summary(target)
        runner = Runner(
            common.work_dir(args, "demo-quality"), target, device=device, seed=args.seed, train={}
        )
        table: list[list[Any]] = []
        for label, spec in pools:
            row: list[Any] = [label]
            for b in budgets:
                print(f"{label}, budget {b} ...", flush=True)
                res = runner.run(
                    runner.config(
                        f"{spec.replace(':', '_')}-{b}", pool={"spec": spec}, steal={"budget": b}
                    )
                )
                data["rows"].append({"pool": spec, "budget": b, **res})
                row.append(f"{res['performance']:.3f} ({res['agreement']:.3f})")
                print(f"    performance {res['performance']:.3f}", flush=True)
            table.append(row)
        tacc = data["rows"][0]["target_accuracy"]
        sections.append(
            ("Target", f"`{tsum['arch']}`, {tsum['epochs']} epochs: test accuracy {tacc:.4f}")
        )
        sections.append(
            (
                "Performance (agreement) by query data and budget",
                common.md_table(["query data", *[f"{b:,}" for b in budgets]], table),
            )
        )
    if args.demo:
        print("timing make demo ...", flush=True)
        demo = time_demo(common.work_dir(args, "demo-timing"))
        data["demo"] = demo
        sections.append(
            (
                "make demo",
                common.md_table(
                    ["wall time (s)", "minutes", "exit status"],
                    [[f"{demo['wall_s']:.0f}", f"{demo['wall_s'] / 60:.1f}", demo["returncode"]]],
                ),
            )
        )
    name = common.result_name("demo_quality", quick=args.quick, tag=args.tag)
    md, _ = common.write_results(
        args.out,
        name,
        title="Copy quality of the default recipe",
        sections=sections,
        data=data,
        info=info,
        command=common.command_line(),
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
