"""Training on images held in memory: the copycat on its fake dataset, or a target on its data.

One loop serves both: hard or soft labels, class-balanced sampling, batched augmentation on the
device, a checkpoint each epoch (``last.pt``, and ``best.pt`` by held-out agreement) and exact
resume. Checkpoints are plain dicts of tensors and numbers, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from copycat.config import TrainConfig
from copycat.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

StepFn = Callable[[int, int, int, float, float], None]  # epoch, step, steps, loss, agreement
METRIC_FIELDS = ("epoch", "train_loss", "train_agreement", "val_agreement", "lr", "seconds")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


@dataclass(slots=True)
class FitResult:
    """What ``fit`` measured; ``history`` holds one dict per epoch (see METRIC_FIELDS)."""

    history: list[dict[str, float]]
    best_val_agreement: float | None
    seconds: float
    samples_per_s: float


def augment_train(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shifts of up to ``pad`` pixels and horizontal flips, per sample, batched."""
    n, _, h, w = x.shape
    dev = x.device
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).to(dev)
    xp = F.pad(x, (pad, pad, pad, pad))
    iy = (torch.arange(h, device=dev)[None, :] + off[0][:, None])[:, None, :, None]
    ix = (torch.arange(w, device=dev)[None, :] + off[1][:, None])[:, None, None, :]
    bi = torch.arange(n, device=dev)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    out = xp[bi, ci, iy, ix]
    flip = (torch.rand(n, generator=gen) < 0.5).to(dev).view(n, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def balanced_indices(labels: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn with replacement so every present class is equally likely."""
    counts = torch.bincount(labels)
    weights = (1.0 / counts.clamp(min=1).double())[labels]
    return torch.multinomial(weights, n, replacement=True, generator=gen)


@torch.inference_mode()
def predict(
    model: nn.Module, images: torch.Tensor, *, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Logits (N, K) float32 for ``uint8`` images (N, C, H, W)."""
    model.eval()
    out = [
        model(chunk.to(device).float().div_(255.0)).float().cpu()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0)


def _save(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)  # atomic: a kill mid-save never leaves a truncated checkpoint
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path} ({exc}); free disk space and "
            "run the same command again: training resumes from the last "
            "checkpoint"
        ) from exc


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({exc}); delete it to start training afresh"
        ) from exc


def fit(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    config: TrainConfig,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    checkpoint_dir: Path | None = None,
    on_step: StepFn | None = None,
) -> FitResult:
    """Train ``model`` on ``images`` (N, C, H, W) uint8 with ``targets``: hard labels (N,)
    int64, or soft labels (N, K) float32 rows summing to 1.

    ``val`` (images, labels) is scored by agreement each epoch; the best epoch goes to
    ``best.pt``. With ``checkpoint_dir`` holding a ``last.pt`` of the same configuration,
    training resumes after its epoch.
    """
    device = resolve_device(config.device)
    soft = targets.ndim == 2
    hard = targets.argmax(1) if soft else targets
    gen = torch.Generator().manual_seed(config.seed)
    # channels-last convolutions run about a third faster on CPU (oneDNN) and no slower on GPU
    model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(images)
    steps = max(1, n // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps, pct_start=0.2
    )
    history: list[dict[str, float]] = []
    best: float | None = None
    start_epoch = 0
    cfg_dict = dataclasses.asdict(config)
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if last is not None and last.is_file():
        ck = load_checkpoint(last)
        same = {k: v for k, v in ck["config"].items() if k != "device"} == {
            k: v for k, v in cfg_dict.items() if k != "device"
        }
        if not same or ck.get("num_samples") != n:
            raise CheckpointError(
                f"{last} was made with another configuration or fake dataset; "
                "delete the checkpoints folder to retrain from scratch"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["generator"])
        history, best, start_epoch = ck["history"], ck["best_val_agreement"], ck["epoch"] + 1
        log.info("resuming training at epoch %d from %s", start_epoch + 1, last)
    t_all = time.perf_counter()
    seen = 0
    # Dropout draws from torch's global generator; fork it so we stay seeded yet leave the
    # caller's random state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + start_epoch)
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            model.train()
            order = (
                balanced_indices(hard, steps * config.batch_size, gen)
                if config.balance
                else torch.randperm(n, generator=gen)[: steps * config.batch_size]
            )
            tot_loss = tot_agree = 0.0
            for step, idx in enumerate(order.view(steps, config.batch_size)):
                x = images[idx].to(device, non_blocking=True).float().div_(255.0)
                if config.augment:
                    x = augment_train(x, gen)
                x = x.contiguous(memory_format=torch.channels_last)
                y = targets[idx].to(device)
                logits = model(x)
                if soft:
                    loss = -(y * F.log_softmax(logits, 1)).sum(1).mean()
                else:
                    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                agree = (logits.argmax(1) == hard[idx].to(device)).float().mean().item()
                tot_loss += loss.item()
                tot_agree += agree
                seen += len(idx)
                if on_step is not None:
                    on_step(epoch, step + 1, steps, loss.item(), agree)
            row: dict[str, float] = {
                "epoch": epoch + 1,
                "train_loss": tot_loss / steps,
                "train_agreement": tot_agree / steps,
                "val_agreement": float("nan"),
                "lr": float(sched.get_last_lr()[0]),
                "seconds": time.perf_counter() - t0,
            }
            if val is not None and len(val[0]):
                row["val_agreement"] = float(
                    (predict(model, val[0], device=device).argmax(1) == val[1]).float().mean()
                )
            history.append(row)
            log.info(
                "epoch %d/%d loss %.4f agreement %.4f val %.4f",
                epoch + 1,
                config.epochs,
                row["train_loss"],
                row["train_agreement"],
                row["val_agreement"],
            )
            if checkpoint_dir is not None:
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                improved = val is None or best is None or row["val_agreement"] >= best
                if improved:
                    best = row["val_agreement"] if val is not None else None
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                ck = {
                    "model": state,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                    "epoch": epoch,
                    "config": cfg_dict,
                    "history": history,
                    "best_val_agreement": best,
                    "num_samples": n,
                }
                if improved:
                    _save(
                        checkpoint_dir / "best.pt",
                        {"model": state, "epoch": epoch, "config": cfg_dict},
                    )
                _save(checkpoint_dir / "last.pt", ck)
            elif val is not None and (best is None or row["val_agreement"] >= best):
                best = row["val_agreement"]
    seconds = time.perf_counter() - t_all
    return FitResult(
        history=history,
        best_val_agreement=best,
        seconds=seconds,
        samples_per_s=seen / seconds if seconds > 0 else 0.0,
    )


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(history)
