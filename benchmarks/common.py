"""Shared helpers of the benchmark scripts: machine facts, the cached target, measured cases in
subprocesses (wall time and peak memory), markdown tables and result files.

Every figure the scripts print comes from copycat's own library (the functions the CLI calls);
this module only sets the stage, times and records.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results"


# -- command line ---------------------------------------------------------------------------------
def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small grid that runs in minutes")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where tables and JSON go")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="scratch folder for run directories (default: a temporary folder)",
    )
    p.add_argument("--tag", default="", help="suffix of the result files (e.g. h100)")
    p.add_argument("--seed", type=int, default=0, help="seed of pools, models and training")
    p.add_argument(
        "--target-epochs",
        type=int,
        default=None,
        help="epochs of the benchmark target (default: the library's; 2 with --quick)",
    )
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one measured case
    return p


def int_list(text: str) -> list[int]:
    """``1000,2k,5k`` -> [1000, 2000, 5000]."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            mult = 1000 if part.endswith("k") else 1
            out.append(int(float(part.rstrip("k")) * mult))
    return out


def setup_process(threads: int | None) -> None:
    """What every script and measured case sets first: the C allocator as the CLI sets it
    (copycat.allocator), and ``threads`` torch threads if given."""
    from copycat.allocator import tune_allocator

    tune_allocator()
    if threads:
        import torch

        torch.set_num_threads(threads)


def resolve_device(name: str) -> str:
    from copycat.devices import resolve_device as resolve

    return str(resolve(name))


# -- the machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    """Date, cores, CPU, GPU and versions: the label every table carries."""
    import torch

    import copycat
    from copycat.allocator import tune_allocator

    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    versions = {
        "python": platform.python_version(),
        "copycat": copycat.__version__,
        "torch": torch.__version__,
    }
    for dist in ("torchvision", "numpy", "onnxruntime", "adversarial-robustness-toolbox"):
        v = _version(dist)
        if v:
            versions[dist] = v
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit,
        "cores": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        # "tuned" since the allocator's settings (copycat.allocator): earlier files' seconds
        # and peak memory were measured without them
        "allocator": tune_allocator(),
        "cpu": cpu_model(),
        "gpu": gpu,
        "device": device,
        "platform": platform.platform(),
        "versions": versions,
    }


def machine_line(info: dict[str, Any]) -> str:
    v = info["versions"]
    parts = [
        f"{info['date'][:10]}",
        f"{info['cores']} cores ({info['torch_threads']} torch threads)",
        info["cpu"],
        f"GPU {info['gpu']}" if info["gpu"] else "no GPU",
        f"device {info['device']}",
        ", ".join(f"{k} {val}" for k, val in v.items()),
    ]
    if info.get("commit"):
        parts.append(f"commit {info['commit']}")
    return "; ".join(parts)


# -- tables and results ---------------------------------------------------------------------------
def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    cells = [[fmt(c) for c in r] for r in rows]
    align = []
    for j in range(len(headers)):
        numeric = all(isinstance(r[j], int | float) or r[j] is None for r in rows) and rows
        align.append("---:" if numeric else "---")
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def result_name(name: str, *, quick: bool, tag: str) -> str:
    return name + ("-quick" if quick else "") + (f"-{tag}" if tag else "")


def write_results(
    out: Path,
    name: str,
    *,
    title: str,
    sections: Sequence[tuple[str, str]],
    data: dict[str, Any],
    info: dict[str, Any],
    command: str,
) -> tuple[Path, Path]:
    """Write ``<name>.md`` (tables under a machine label) and ``<name>.json`` beside it."""
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", f"Machine: {machine_line(info)}", "", f"Command: `{command}`", ""]
    for heading, body in sections:
        if heading:
            md += [f"## {heading}", ""]
        md += [body, ""]
    md_path = out / f"{name}.md"
    md_path.write_text("\n".join(md))
    js_path = out / f"{name}.json"
    js_path.write_text(
        json.dumps({"machine": info, "command": command, **data}, indent=2, default=str) + "\n"
    )
    return md_path, js_path


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


# -- measured cases in subprocesses ---------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_mb() -> float:
    """Peak resident memory of this process, MiB.

    Linux's ``VmHWM`` (this address space only). ``ru_maxrss`` is the fallback elsewhere; on
    Linux it is not used because it keeps the parent's high-water mark across fork and exec.
    """
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def rss_mb() -> float:
    """Current resident memory of this process, MiB."""
    cur = _status_mb("VmRSS")
    return cur if cur is not None else peak_mb()


def reset_peak() -> bool:
    """Reset the peak (VmHWM) to the current RSS, so a stage's own peak can be read after it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_case(script: Path, case: dict[str, Any], *, threads: int | None) -> dict[str, Any]:
    """Run ``script --case JSON`` in a fresh interpreter so its peak memory is its own.

    The child writes its result (a dict, with ``peak_mb`` of its own process) to a file. The
    parent adds ``proc_s``: the child's wall time, interpreter start and imports included.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    case = {**case, "_result": str(result_path)}
    cmd = [sys.executable, str(script), "--case", json.dumps(case)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False)
    proc_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"case {case.get('name')} failed (exit {proc.returncode})")
    result = json.loads(result_path.read_text())
    result_path.unlink(missing_ok=True)
    result["proc_s"] = proc_s
    return result


def case_main(handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """The child side of :func:`run_case`: ``--case JSON [--threads N]``."""
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True)
    p.add_argument("--threads", type=int, default=None)
    args, _ = p.parse_known_args()
    setup_process(args.threads)
    case = json.loads(args.case)
    result = handlers[case["kind"]](case)
    result["peak_mb"] = max(peak_mb(), result.pop("_peak_before_mb", 0.0))
    Path(case["_result"]).write_text(json.dumps(result, default=str))


# -- the target -----------------------------------------------------------------------------------
def cache_root() -> Path:
    env = os.environ.get("COPYCAT_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "copycat" / "bench-target"


def target_config(*, epochs: int | None, device: str) -> Any:
    """The library's default target recipe, with ``epochs`` overridden where asked."""
    from copycat.config import TargetConfig

    train = TargetConfig().train
    if epochs is not None:
        train = dataclasses.replace(train, epochs=epochs)
    return dataclasses.replace(train, device=device)


def bench_target(*, epochs: int | None, device: str, log: Callable[[str], None] = print) -> Path:
    """The default Fashion-MNIST target, trained once and cached by its configuration."""
    from copycat.config import TargetConfig
    from copycat.targets.publish import train_target_on

    cfg = target_config(epochs=epochs, device=device)
    keyed = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}
    dataset = TargetConfig().dataset
    key = hashlib.sha256(json.dumps([dataset, keyed], sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root() / f"{dataset}-{cfg.arch}-e{cfg.epochs}-{key}"
    if (folder / "card.json").is_file() and (folder / "model.onnx").is_file():
        return folder
    log(f"training the benchmark target ({cfg.arch}, {cfg.epochs} epochs) into {folder} ...")
    t0 = time.perf_counter()
    train_target_on(dataset, out=folder, config=cfg)
    log(f"target trained in {time.perf_counter() - t0:.0f} s")
    return folder


def target_summary(folder: Path) -> dict[str, Any]:
    card = json.loads((folder / "card.json").read_text())
    return {
        "folder": str(folder),
        "arch": card["arch"],
        "epochs": card.get("extra", {}).get("epochs"),
        "seed": card.get("extra", {}).get("seed"),
        "test_accuracy": card.get("test_accuracy"),
        "test_macro_f1": card.get("test_macro_f1"),
        # which build of the target: builds of one recipe on two machines differ, and so do
        # the copies stolen from them (docs/suite.md)
        "weights_sha256": weights_digest(folder),
    }


def weights_digest(folder: Path) -> str | None:
    """SHA-256 of a target folder's weights (None if it has none, e.g. an HTTP target)."""
    from copycat.oracles.local import WEIGHTS_NAME, file_digest

    path = folder / WEIGHTS_NAME
    return file_digest(path) if path.is_file() else None


def default_target_epochs(args: argparse.Namespace) -> int | None:
    if args.target_epochs is not None:
        return int(args.target_epochs)
    return 2 if args.quick else None


def experiment(run_dir: Path, target: Path, *, device: str, seed: int, **changes: Any) -> Any:
    """The library's default experiment, pointed at ``target`` and ``run_dir``.

    ``changes`` replace fields section by section: ``pool={...}``, ``steal={...}``,
    ``train={...}``, ``augment={...}`` (the pool's), or top-level fields such as ``output``.
    """
    from copycat.config import ExperimentConfig

    base = ExperimentConfig()
    aug = dataclasses.replace(base.pool.augment, **changes.pop("augment", {}))
    pool = dataclasses.replace(base.pool, augment=aug, **{"seed": seed, **changes.pop("pool", {})})
    steal = dataclasses.replace(base.steal, **changes.pop("steal", {}))
    train = dataclasses.replace(base.train, **{"seed": seed, "device": device})
    train = dataclasses.replace(train, **changes.pop("train", {}))
    return dataclasses.replace(
        base,
        run_dir=str(run_dir),
        oracle=f"torch:{target}",
        pool=pool,
        steal=steal,
        train=train,
        **changes,
    )


def work_dir(args: argparse.Namespace, name: str) -> Path:
    if args.work is not None:
        path = Path(args.work) / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"copycat-bench-{name}-"))


def quiet_logging() -> None:
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)


def start_serve(
    target: Path, log: Path, args: Sequence[str], *, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``copycat serve --model TARGET --port 0 ARGS`` in a subprocess; returns it and its URL,
    read from the log (the port is picked by the system)."""
    import re

    if env is None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "copycat.cli", "serve", "--model", str(target), "--port", "0"]
    with log.open("wb") as f:
        proc = subprocess.Popen([*cmd, *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    for _ in range(1200):
        m = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()[-2000:]}")
