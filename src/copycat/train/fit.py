"""Training on images held in memory: the copycat on its fake dataset, or a target on its data.

One loop serves both: hard or soft labels, class-balanced sampling, batched augmentation on the
device, a checkpoint each epoch (``last.pt``, and ``best.pt`` by held-out agreement) and exact
resume. Checkpoints are plain dicts of tensors and numbers, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from copycat.config import TrainConfig
from copycat.devices import resolve_device
from copycat.errors import StaleCheckpointError
from copycat.train.checkpoint import load_checkpoint, save_checkpoint
from copycat.train.distill import distill_loss

log = logging.getLogger(__name__)

StepFn = Callable[[int, int, int, float, float], None]  # epoch, step, steps, loss, agreement
# A loss added to each step's (e.g. semi-supervised, see copycat.train.semi): model, the
# loop's generator, the device -> a scalar tensor.
ExtraLoss = Callable[[nn.Module, torch.Generator, torch.device], torch.Tensor]


@dataclass(slots=True)
class FitResult:
    """What ``fit`` measured; ``history`` holds one dict per epoch (see METRIC_FIELDS)."""

    history: list[dict[str, float]]
    best_val_agreement: float | None
    seconds: float
    samples_per_s: float


def shift(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random shifts of up to ``pad`` pixels per sample (zero fill), batched on ``x``'s device."""
    if pad == 0:
        return x
    n, _, h, w = x.shape
    dev = x.device
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).to(dev)
    xp = F.pad(x, (pad, pad, pad, pad))
    iy = (torch.arange(h, device=dev)[None, :] + off[0][:, None])[:, None, :, None]
    ix = (torch.arange(w, device=dev)[None, :] + off[1][:, None])[:, None, None, :]
    bi = torch.arange(n, device=dev)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    return xp[bi, ci, iy, ix]


def augment_train(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shifts of up to ``pad`` pixels and horizontal flips, per sample, batched."""
    out = shift(x, gen, pad)
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def mixup_draw(n: int, alpha: float, gen: torch.Generator) -> tuple[float, torch.Tensor]:
    """Mixup's weight, drawn from Beta(``alpha``, ``alpha``) and folded to >= 0.5 so that each
    mix stays mostly its first image (whose label training agreement counts), and a random
    partner (n,) int64 for each of ``n`` samples."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam), torch.randperm(n, generator=gen)


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


@dataclass(slots=True, kw_only=True)
class _Loop:
    """The state one ``fit`` call carries from epoch to epoch (and through ``last.pt``)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    device: torch.device
    config: TrainConfig
    cfg_dict: dict[str, Any]
    steps: int  # per epoch
    epochs: int  # the config's, resolved for this many steps (TrainConfig.epochs_at)
    batch: int  # the batch size used: at most the number of samples
    n: int
    digest: str = ""
    extra_loss: ExtraLoss | None = None
    # config.ema > 0: a copy of the model whose weights are the moving average (see _ema_step)
    ema: nn.Module | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    start_epoch: int = 0
    seen: int = 0
    # The global RNG states (dropout draws from them) to continue from on resume.
    rng_cpu: torch.Tensor | None = None
    rng_cuda: list[torch.Tensor] | None = None


def fit(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    config: TrainConfig,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    checkpoint_dir: Path | None = None,
    on_step: StepFn | None = None,
    metric: str = "agreement",
    extra_loss: ExtraLoss | None = None,
) -> FitResult:
    """Train ``model`` on ``images`` (N, C, H, W) uint8 with ``targets``: hard labels (N,)
    int64, or soft labels (N, K) float32 rows summing to 1.

    ``val`` (images, labels) is scored by agreement each epoch; the best epoch goes to
    ``best.pt``. With ``checkpoint_dir`` holding a ``last.pt`` of the same configuration,
    training resumes after its epoch, bit for bit as if never interrupted (every random state
    travels in ``last.pt``); a ``last.pt`` made on other data is refused. ``metric`` names what
    the training-label match is in the log: ``agreement`` with an oracle's answers,
    ``accuracy`` with true labels. ``extra_loss`` is added to every step's loss.
    """
    loop = _setup(model, len(images), config=config)
    loop.digest = data_digest(images, targets, val)
    loop.extra_loss = extra_loss
    if checkpoint_dir is not None:
        _resume(loop, checkpoint_dir / "last.pt")
    t_all = time.perf_counter()
    cuda = [loop.device.index or 0] if loop.device.type == "cuda" else []
    # Dropout draws from torch's global generators; fork them so we stay seeded yet leave the
    # caller's random state untouched. A resumed run continues from the states in last.pt, so
    # it draws exactly the masks an uninterrupted run would have drawn.
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        if loop.rng_cpu is not None:
            torch.set_rng_state(loop.rng_cpu)
        if cuda and loop.rng_cuda:
            torch.cuda.set_rng_state(loop.rng_cuda[0], cuda[0])
        for epoch in range(loop.start_epoch, loop.epochs):
            row = _train_epoch(loop, epoch, images, targets, on_step=on_step)
            has_val = val is not None and len(val[0]) > 0
            if val is not None and has_val:
                pred = predict(_kept(loop), val[0], device=loop.device).argmax(1)
                row["val_agreement"] = float((pred == val[1]).float().mean())
            loop.history.append(row)
            _log_epoch(row, loop.epochs, metric=metric, has_val=has_val)
            if checkpoint_dir is not None:
                _checkpoint(loop, epoch, row, checkpoint_dir, has_val=val is not None)
            elif val is not None and (loop.best is None or row["val_agreement"] >= loop.best):
                loop.best = row["val_agreement"]
    seconds = time.perf_counter() - t_all
    if loop.ema is not None:  # the caller's model becomes the copy that was scored and kept
        loop.model.load_state_dict(loop.ema.state_dict())
    return FitResult(
        history=loop.history,
        best_val_agreement=loop.best,
        seconds=seconds,
        samples_per_s=loop.seen / seconds if seconds > 0 else 0.0,
    )


def held_out_split(n: int, *, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The (held-out, training) indices of ``n`` answers: the split every copycat fit uses."""
    gen = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(n, generator=gen)
    n_val = int(n * config.val_fraction)
    return perm[:n_val], perm[n_val:]


def data_digest(
    images: torch.Tensor,
    targets: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> str:
    """SHA-256 of the training data (images, targets and held-out set: shapes, dtypes, bytes),
    so a checkpoint is never resumed on other answers of the same size."""
    h = hashlib.sha256()
    for t in (images, targets, *(val or ())):
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _log_epoch(row: dict[str, float], epochs: int, *, metric: str, has_val: bool) -> None:
    msg = "epoch %d/%d loss %.4f " + metric + " %.4f"
    args: list[Any] = [int(row["epoch"]), epochs, row["train_loss"], row["train_agreement"]]
    if has_val:
        msg += " val %.4f"
        args.append(row["val_agreement"])
    log.info(msg, *args)


def _setup(model: nn.Module, n: int, *, config: TrainConfig) -> _Loop:
    """Device, optimiser (AdamW) and schedule (one cycle) for ``n`` training samples."""
    device = resolve_device(config.device)
    # channels-last convolutions run about a third faster on CPU (oneDNN) and no slower on GPU
    model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, n)  # a set smaller than one batch is one batch
    steps = config.steps_per_epoch(n)
    epochs = config.epochs_at(steps)
    sched = _schedule(opt, lr=config.lr, total=epochs * steps)
    ema = copy.deepcopy(model) if config.ema > 0 else None
    return _Loop(
        model=model,
        opt=opt,
        sched=sched,
        gen=torch.Generator().manual_seed(config.seed),
        device=device,
        config=config,
        cfg_dict=dataclasses.asdict(config),
        steps=steps,
        epochs=epochs,
        batch=batch,
        n=n,
        ema=ema,
    )


def _kept(loop: _Loop) -> nn.Module:
    """The model that is scored and checkpointed: the moving average if there is one."""
    return loop.ema if loop.ema is not None else loop.model


@torch.no_grad()
def _ema_step(loop: _Loop, t: int) -> None:
    """Move the average toward the model after optimiser step ``t`` (0-based): weights and
    float buffers by ``1 - decay``, with the decay warmed up so that short runs are not an
    average of their random start; integer buffers (batch counts) are copied."""
    assert loop.ema is not None
    w = 1.0 - min(loop.config.ema, (1.0 + t) / (10.0 + t))
    avg = loop.ema.state_dict()
    for k, v in loop.model.state_dict().items():
        if v.dtype.is_floating_point:
            avg[k].lerp_(v, w)
        else:
            avg[k].copy_(v)


def _schedule(
    opt: torch.optim.Optimizer, *, lr: float, total: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One cycle (warm-up over a fifth of the steps, then annealing); runs too short for a
    warm-up phase get a longer one, and one or two steps a constant rate."""
    if total < 3:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=total, pct_start=max(0.2, 2.0 / total)
    )


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """A training configuration as resuming compares it: the device aside, and a field that
    a checkpoint predates taken at its default (a field added later with its default value
    changes nothing of the training that made the checkpoint)."""
    defaults = dataclasses.asdict(TrainConfig())
    return {k: cfg.get(k, defaults[k]) for k in defaults if k != "device"} | {
        k: v for k, v in cfg.items() if k not in defaults
    }


def _resume(loop: _Loop, last: Path) -> None:
    """Continue from ``last.pt`` if it exists; refuse one of another configuration."""
    if not last.is_file():
        return
    ck = load_checkpoint(last)
    same = _comparable(ck["config"]) == _comparable(loop.cfg_dict)
    if not same or ck.get("num_samples") != loop.n or ck.get("data_digest") != loop.digest:
        raise StaleCheckpointError(
            f"{last} was made with another configuration or fake dataset; "
            "delete the checkpoints folder to retrain from scratch"
        )
    if "rng_cpu" not in ck:
        raise StaleCheckpointError(
            f"{last} holds no random states (an older copycat made it), so resuming it would "
            "not be exact; delete the checkpoints folder to retrain from scratch"
        )
    loop.model.load_state_dict(ck["model"])
    if loop.ema is not None:  # the same configuration, so last.pt holds the average too
        loop.ema.load_state_dict(ck["ema"])
    loop.opt.load_state_dict(ck["optimizer"])
    loop.sched.load_state_dict(ck["scheduler"])
    loop.gen.set_state(ck["generator"])
    loop.rng_cpu, loop.rng_cuda = ck["rng_cpu"], ck.get("rng_cuda") or None
    loop.history, loop.best = ck["history"], ck["best_val_agreement"]
    loop.start_epoch = ck["epoch"] + 1
    log.info("resuming training at epoch %d from %s", loop.start_epoch + 1, last)


def _train_epoch(
    loop: _Loop,
    epoch: int,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    on_step: StepFn | None,
) -> dict[str, float]:
    """One epoch of ``loop.steps`` batches; returns its metrics row (val_agreement nan)."""
    cfg, device, gen = loop.config, loop.device, loop.gen
    soft = targets.ndim == 2
    hard = targets.argmax(1) if soft else targets
    t0 = time.perf_counter()
    loop.model.train()
    n_used = loop.steps * loop.batch
    order = (
        balanced_indices(hard, n_used, gen)
        if cfg.balance
        else torch.randperm(loop.n, generator=gen)[:n_used]
    )
    tot_loss = tot_agree = 0.0
    for step, idx in enumerate(order.view(loop.steps, loop.batch)):
        x = images[idx].to(device, non_blocking=True).float().div_(255.0)
        if cfg.augment:
            x = augment_train(x, gen)
        lam, partner = 1.0, None
        if cfg.mixup > 0:  # each image mixed with another and trained on both labels
            lam, partner = mixup_draw(len(x), cfg.mixup, gen)
            partner = partner.to(device)
            x = lam * x + (1.0 - lam) * x[partner]
        x = x.contiguous(memory_format=torch.channels_last)
        y = targets[idx].to(device)
        logits = loop.model(x)
        loss = _loss(logits, y, cfg, soft=soft)
        if partner is not None:
            loss = lam * loss + (1.0 - lam) * _loss(logits, y[partner], cfg, soft=soft)
        if loop.extra_loss is not None:
            loss = loss + loop.extra_loss(loop.model, gen, device)
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.opt.step()
        loop.sched.step()
        if loop.ema is not None:
            _ema_step(loop, epoch * loop.steps + step)
        agree = (logits.argmax(1) == hard[idx].to(device)).float().mean().item()
        tot_loss += loss.item()
        tot_agree += agree
        loop.seen += len(idx)
        if on_step is not None:
            on_step(epoch, step + 1, loop.steps, loss.item(), agree)
    return {
        "epoch": epoch + 1,
        "train_loss": tot_loss / loop.steps,
        "train_agreement": tot_agree / loop.steps,
        "val_agreement": float("nan"),
        "lr": float(loop.sched.get_last_lr()[0]),
        "seconds": time.perf_counter() - t0,
    }


def _loss(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *, soft: bool) -> torch.Tensor:
    if soft:
        return distill_loss(logits, y, cfg.temperature)
    return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _checkpoint(
    loop: _Loop, epoch: int, row: dict[str, float], folder: Path, *, has_val: bool
) -> None:
    """``last.pt`` every epoch; ``best.pt`` when held-out agreement does not fall."""
    folder.mkdir(parents=True, exist_ok=True)
    improved = not has_val or loop.best is None or row["val_agreement"] >= loop.best
    if improved:
        loop.best = row["val_agreement"] if has_val else None
    state = _cpu_state(loop.model)
    kept = state if loop.ema is None else _cpu_state(loop.ema)
    if improved:
        save_checkpoint(
            folder / "best.pt", {"model": kept, "epoch": epoch, "config": loop.cfg_dict}
        )
    save_checkpoint(
        folder / "last.pt",
        {
            "model": state,
            "ema": kept if loop.ema is not None else None,
            "optimizer": loop.opt.state_dict(),
            "scheduler": loop.sched.state_dict(),
            "generator": loop.gen.get_state(),
            "epoch": epoch,
            "config": loop.cfg_dict,
            "history": loop.history,
            "best_val_agreement": loop.best,
            "num_samples": loop.n,
            "data_digest": loop.digest,
            # Global RNG states after this epoch: dropout continues from them on resume.
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": (
                [torch.cuda.get_rng_state(loop.device.index or 0)]
                if loop.device.type == "cuda"
                else []
            ),
        },
    )
