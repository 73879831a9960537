"""The cost of each stage, and how it grows with the budget.

- Query stage: images per second through ``steal`` (pool, hashing, store, oracle) against a
  local torch oracle and an ONNX oracle, over the oracle's raw speed on the same batches.
- Training: images per second of ``copycat train`` (``train_stage``), over a bare PyTorch loop
  with the same model, batch size and data already in memory.
- Growth: wall time and peak memory of steal and train at growing budgets, each in its own
  process.

    PYTHONPATH=src python benchmarks/stages.py --quick
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


def parse_args() -> Any:
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--query-images", type=int, default=None, help="images per query measurement")
    p.add_argument("--train-budget", type=int, default=None, help="answers for the train ratio")
    p.add_argument("--train-epochs", type=int, default=2, help="epochs of the train ratio")
    p.add_argument("--budgets", type=common.int_list, default=None, help="growth budgets")
    p.add_argument("--growth-epochs", type=int, default=1, help="epochs of the growth rows")
    p.add_argument("--arch", default=None, help="copycat architecture (default: the library's)")
    p.add_argument("--repeats", type=int, default=3, help="best of N for the throughputs")
    return p.parse_args()


def start_stage() -> dict[str, float]:
    """The process's peak so far, then a reset: VmHWM after the stage is the stage's peak."""
    before = common.peak_mb()
    common.reset_peak()
    return {"_peak_before_mb": before, "baseline_mb": common.rss_mb()}


def stage_peak() -> float:
    return common.peak_mb()


# -- query stage -----------------------------------------------------------------------------------
def query_stage(target: Path, work: Path, *, n: int, device: str, seed: int, repeats: int) -> Any:
    """steal's images/s over the raw oracle's, both on the same batches; and where time goes."""
    from copycat.oracles.registry import parse_oracle_spec
    from copycat.pools.pool import build_pool
    from copycat.steal.loop import steal
    from copycat.steal.store import AnswerStore, image_id

    cfg = common.experiment(work / "q", target, device=device, seed=seed)
    bs = cfg.steal.batch_size
    rows, parts = [], []
    specs = {"torch": f"torch:{target}", "onnx": f"onnx:{target / 'model.onnx'}"}
    for backend, spec in specs.items():
        oracle = parse_oracle_spec(spec, output=cfg.output, device=device)
        pool = build_pool(cfg.pool, shape=oracle.input_shape)
        # The batches steal will send: the pool's stream, cut at the steal batch size.
        t0 = time.perf_counter()
        batches = []
        for cand in pool.batches(bs):
            batches.append(cand.images)
            if sum(len(b) for b in batches) >= n:
                break
        pool_s = time.perf_counter() - t0
        n_img = sum(len(b) for b in batches)
        floats = [b.float().div_(255.0) for b in batches]
        oracle.query(floats[0])  # warm up (lazy model load, first-call allocations)
        raw_s = min(_time_queries(oracle, floats) for _ in range(repeats))
        t0 = time.perf_counter()
        for b in batches:
            [image_id(img) for img in b]
        hash_s = time.perf_counter() - t0
        steal_s = []
        for r in range(repeats):
            path = work / f"q-{backend}-{r}.sqlite"
            path.unlink(missing_ok=True)
            pool = build_pool(cfg.pool, shape=oracle.input_shape)
            conf = dataclasses.replace(cfg.steal, budget=n_img)
            with AnswerStore(path) as store:
                t0 = time.perf_counter()
                steal(oracle, pool, store, config=conf)
                steal_s.append(time.perf_counter() - t0)
        # The store alone: the same answers written batch by batch into a fresh store.
        path = work / f"q-{backend}-store.sqlite"
        path.unlink(missing_ok=True)
        answers = [oracle.query(x) for x in floats]
        with AnswerStore(path) as store:
            store.bind(
                fingerprint=oracle.fingerprint,
                input_shape=oracle.input_shape,
                num_classes=oracle.num_classes,
                pool="bench",
                budget=n_img,
            )
            t0 = time.perf_counter()
            for b, a in zip(batches, answers, strict=True):
                ids = [image_id(img) for img in b]
                store.known(ids)
                store.add_batch(ids, b, a.labels, a.probs, ["npd"] * len(b))
            store_s = time.perf_counter() - t0 - hash_s
        best = min(steal_s)
        rows.append(
            {
                "backend": backend,
                "images": n_img,
                "batch": bs,
                "raw_ips": n_img / raw_s,
                "steal_ips": n_img / best,
                "ratio": raw_s / best,
            }
        )
        parts.append(
            {
                "backend": backend,
                "steal_s": best,
                "oracle_s": raw_s,
                "pool_s": pool_s,
                "hash_s": hash_s,
                "store_s": max(store_s, 0.0),
            }
        )
    return rows, parts


def _time_queries(oracle: Any, floats: list[Any]) -> float:
    t0 = time.perf_counter()
    for x in floats:
        oracle.query(x)
    return time.perf_counter() - t0


# -- training --------------------------------------------------------------------------------------
def train_ratio(
    target: Path, work: Path, *, budget: int, epochs: int, arch: str | None, device: str, seed: int
) -> dict[str, Any]:
    """``train_stage`` images/s over a bare loop (same model, batch; data already a float
    tensor on the device; plain shuffling, cross-entropy, AdamW)."""
    import torch
    import torch.nn.functional as F

    from copycat.devices import resolve_device
    from copycat.pipeline import steal_stage, train_stage
    from copycat.runs import RunDir
    from copycat.steal.store import AnswerStore
    from copycat.train.models import build_model

    train: dict[str, Any] = {"epochs": epochs}
    if arch:
        train["arch"] = arch
    cfg = common.experiment(
        work / "train",
        target,
        device=device,
        seed=seed,
        steal={"budget": budget, "selection": "random"},
        train=train,
    )
    steal_stage(cfg)
    t0 = time.perf_counter()
    fit = train_stage(cfg)
    stage_s = time.perf_counter() - t0
    tc = cfg.train
    with AnswerStore(RunDir.at(cfg.run_dir).store) as store:
        data = store.load()
    n_train = len(data) - int(len(data) * tc.val_fraction)
    steps = max(1, n_train // tc.batch_size)
    samples = steps * tc.batch_size * epochs
    dev = resolve_device(device)
    torch.manual_seed(seed)
    shape = tuple(data.images.shape[1:])
    model = build_model(tc.arch, in_channels=shape[0], num_classes=10, input_size=shape[1]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    x = data.images[:n_train].to(dev).float().div_(255.0)
    y = data.labels[:n_train].to(dev)
    model.train()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n_train, device=dev)[: steps * tc.batch_size]
        for idx in perm.view(steps, tc.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    bare_s = time.perf_counter() - t0
    bare_ips = samples / bare_s
    return {
        "arch": tc.arch,
        "batch": tc.batch_size,
        "answers": len(data),
        "epochs": epochs,
        "samples": samples,
        "bare_ips": bare_ips,
        "fit_ips": fit.samples_per_s,
        "stage_ips": samples / stage_s,
        "fit_ratio": fit.samples_per_s / bare_ips,
        "stage_ratio": samples / stage_s / bare_ips,
        "options": {"balance": tc.balance, "augment": tc.augment, "val": tc.val_fraction},
    }


# -- growth (children) -----------------------------------------------------------------------------
def growth_config(case: dict[str, Any], **changes: Any) -> Any:
    """The experiment of one growth case, for its steal and its train child alike."""
    return common.experiment(
        Path(case["run_dir"]),
        Path(case["target"]),
        device=case["device"],
        seed=case["seed"],
        # random selection: the query stage alone, without label-aware selection's interim
        # copycat (a training cost that holds the answers in memory)
        steal={"budget": case["budget"], "selection": "random"},
        **changes,
    )


def case_steal(case: dict[str, Any]) -> dict[str, Any]:
    from copycat.pipeline import open_oracle, steal_stage
    from copycat.pools.pool import build_pool

    common.quiet_logging()
    cfg = growth_config(case)
    oracle = open_oracle(cfg)
    build_pool(cfg.pool, shape=oracle.input_shape)  # load the NPD bank before the baseline
    oracle.query(__import__("torch").zeros(1, *oracle.input_shape))
    mark = start_stage()
    t0 = time.perf_counter()
    summary = steal_stage(cfg, oracle=oracle)
    wall = time.perf_counter() - t0
    peak = stage_peak()
    store = Path(case["run_dir"]) / "answers.sqlite"
    return {
        "wall_s": wall,
        "queries": summary.answered,
        "stage_peak_mb": peak,
        "store_mb": store.stat().st_size / 2**20,
        **mark,
    }


def case_train(case: dict[str, Any]) -> dict[str, Any]:
    from copycat.pipeline import train_stage

    common.quiet_logging()
    train: dict[str, Any] = {"epochs": case["epochs"]}
    if case.get("arch"):
        train["arch"] = case["arch"]
    cfg = growth_config(case, train=train)
    mark = start_stage()
    t0 = time.perf_counter()
    fit = train_stage(cfg)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "stage_peak_mb": stage_peak(),
        "samples_per_s": fit.samples_per_s,
        **mark,
    }


def growth(args: Any, target: Path, work: Path, device: str) -> list[dict[str, Any]]:
    budgets = args.budgets or ([1_000, 3_000, 10_000] if args.quick else [1_000, 10_000, 100_000])
    rows = []
    for b in budgets:
        case = {
            "run_dir": str(work / f"growth-{b}"),
            "target": str(target),
            "device": device,
            "seed": args.seed,
            "budget": b,
            "epochs": args.growth_epochs,
            "arch": args.arch,
        }
        print(f"[growth] steal {b} ...", flush=True)
        s = common.run_case(
            SCRIPT, {**case, "kind": "steal", "name": f"steal@{b}"}, threads=args.threads
        )
        print(f"[growth] train {b} ...", flush=True)
        t = common.run_case(
            SCRIPT, {**case, "kind": "train", "name": f"train@{b}"}, threads=args.threads
        )
        rows.append(
            {
                "budget": b,
                "steal_s": s["wall_s"],
                "steal_ms_per_query": 1000 * s["wall_s"] / b,
                "steal_peak_mb": s["peak_mb"],
                "steal_baseline_mb": s["baseline_mb"],
                "steal_growth_mb": s["stage_peak_mb"] - s["baseline_mb"],
                "store_mb": s["store_mb"],
                "train_s": t["wall_s"],
                "train_epochs": args.growth_epochs,
                "train_ms_per_answer_epoch": 1000 * t["wall_s"] / (b * args.growth_epochs),
                "train_peak_mb": t["peak_mb"],
                "train_baseline_mb": t["baseline_mb"],
                "train_growth_mb": t["stage_peak_mb"] - t["baseline_mb"],
            }
        )
        r = rows[-1]
        print(
            f"    steal {r['steal_s']:.1f} s peak {r['steal_peak_mb']:.0f} MiB; "
            f"train {r['train_s']:.1f} s peak {r['train_peak_mb']:.0f} MiB",
            flush=True,
        )
    return rows


def main() -> None:
    args = parse_args()
    if args.case:
        common.case_main({"steal": case_steal, "train": case_train})
        return
    common.setup_process(args.threads)
    common.quiet_logging()
    device = common.resolve_device(args.device)
    info = common.machine_info(device, args.threads)
    target = common.bench_target(epochs=common.default_target_epochs(args), device=device)
    tsum = common.target_summary(target)
    work = common.work_dir(args, "stages")
    n_query = args.query_images or (2_048 if args.quick else 10_240)
    train_budget = args.train_budget or (3_000 if args.quick else 10_000)
    t_all = time.perf_counter()

    print("[query] torch and onnx oracles ...", flush=True)
    qrows, qparts = query_stage(
        target, work, n=n_query, device=device, seed=args.seed, repeats=args.repeats
    )
    print("[train] copycat train against a bare loop ...", flush=True)
    tr = train_ratio(
        target,
        work,
        budget=train_budget,
        epochs=args.train_epochs,
        arch=args.arch,
        device=device,
        seed=args.seed,
    )
    grows = growth(args, target, work, device)
    total_s = time.perf_counter() - t_all

    q_md = common.md_table(
        ["oracle", "images", "batch", "raw oracle img/s", "steal img/s", "ratio (goal ≥ 0.9)"],
        [
            [r["backend"], r["images"], r["batch"], r["raw_ips"], r["steal_ips"], r["ratio"]]
            for r in qrows
        ],
    )
    p_md = common.md_table(
        ["oracle", "steal s", "oracle s", "pool s", "hashing s", "store s", "rest s"],
        [
            [
                p["backend"],
                p["steal_s"],
                p["oracle_s"],
                p["pool_s"],
                p["hash_s"],
                p["store_s"],
                p["steal_s"] - p["oracle_s"] - p["pool_s"] - p["hash_s"] - p["store_s"],
            ]
            for p in qparts
        ],
    )
    t_md = common.md_table(
        [
            "arch",
            "batch",
            "answers",
            "epochs",
            "bare loop img/s",
            "fit img/s",
            "fit ratio",
            "`copycat train` img/s",
            "train ratio (goal ≥ 0.9)",
        ],
        [
            [
                tr["arch"],
                tr["batch"],
                tr["answers"],
                tr["epochs"],
                tr["bare_ips"],
                tr["fit_ips"],
                tr["fit_ratio"],
                tr["stage_ips"],
                tr["stage_ratio"],
            ]
        ],
    )
    g_md = common.md_table(
        [
            "budget",
            "steal s",
            "ms/query",
            "steal peak MiB",
            "steal growth MiB",
            "store MiB",
            f"train s ({args.growth_epochs} ep.)",
            "ms/answer/epoch",
            "train peak MiB",
            "train growth MiB",
        ],
        [
            [
                g["budget"],
                g["steal_s"],
                g["steal_ms_per_query"],
                g["steal_peak_mb"],
                g["steal_growth_mb"],
                g["store_mb"],
                g["train_s"],
                g["train_ms_per_answer_epoch"],
                g["train_peak_mb"],
                g["train_growth_mb"],
            ]
            for g in grows
        ],
    )
    notes = (
        "Query ratio: images/s of `steal` (pool generation and augmentation, content hashing, "
        "the SQLite store, the oracle) over the same oracle's `query` alone on the same "
        "batches, best of "
        f"{args.repeats}. The breakdown times each part alone on the same batches; *rest* is "
        "steal's own bookkeeping. Train ratio: `copycat train` (store load, balanced sampling, "
        "batched augmentation, a validation pass and a checkpoint per epoch) over a bare "
        "PyTorch loop; *fit* is the training loop alone (`FitResult.samples_per_s`). "
        "Growth: each stage in its own process; *growth* is peak RSS minus the RSS just "
        "before the stage (after imports, the oracle and the pool's image bank)."
    )
    if args.quick and args.target_epochs is None:
        notes += " (--quick: the target is trained for 2 epochs only.)"
    name = common.result_name("stages", quick=args.quick, tag=args.tag)
    md, js = common.write_results(
        args.out,
        name,
        title="The cost of each stage",
        sections=[
            ("Query stage", q_md),
            ("Where the query stage spends its time", p_md),
            ("Training", t_md),
            ("Growth with the budget", g_md),
            ("", notes + f"\n\nTotal wall time: {total_s:.0f} s."),
        ],
        data={
            "target": tsum,
            "query": qrows,
            "query_breakdown": qparts,
            "train": tr,
            "growth": grows,
            "total_s": total_s,
        },
        info=info,
        command=common.command_line(),
    )
    print(md.read_text())
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    main()
