"""The train stage wired to a run directory: the fake dataset from the store, the copycat
trained on it (optionally with unqueried pool images), its weights and card beside the store."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from typing import Any

import torch

from copycat.config import ExperimentConfig, TrainConfig, to_jsonable
from copycat.errors import CopycatError, StaleCheckpointError
from copycat.pools.pool import build_pool
from copycat.runs import RunDir, read_json, write_atomic
from copycat.steal.store import AnswerStore, image_id
from copycat.train.checkpoint import load_checkpoint, save_weights, write_metrics
from copycat.train.choose import ArchChoice, choose_arch, drop_candidates
from copycat.train.copies import fit_copy
from copycat.train.fit import FitResult, StepFn, held_out_split
from copycat.train.models import AUTO_ARCH, auto_candidates, is_auto

log = logging.getLogger(__name__)


def unqueried_images(run: RunDir, cfg: ExperimentConfig, n: int) -> torch.Tensor:
    """``n`` pool images (n, C, H, W) uint8 the oracle was never asked about: the steal's pool
    (as recorded in ``config.json``, else ``cfg.pool``) on another seed, answered images out."""
    from copycat.config import PoolConfig, from_dict

    recorded = run.read_config().get("steal", {}).get("pool")
    pool_cfg = from_dict(PoolConfig, recorded) if recorded else cfg.pool
    pool_cfg = replace(pool_cfg, seed=pool_cfg.seed + 1_000_003)
    with AnswerStore(run.store) as store:
        shape = tuple(json.loads(store.meta()["input_shape"]))
        pool = build_pool(pool_cfg, shape=(int(shape[0]), int(shape[1]), int(shape[2])))
        out: list[torch.Tensor] = []
        got = 0
        for cand in pool.batches(1024):
            ids = [image_id(img) for img in cand.images]
            known = store.known(ids)
            keep = [j for j, h in enumerate(ids) if h not in known]
            out.append(cand.images[keep])
            got += len(keep)
            if got >= n:
                break
    return torch.cat(out)[:n]


def semi_images(run: RunDir, cfg: ExperimentConfig) -> torch.Tensor | None:
    """The unqueried pool images ``cfg.train.semi`` trains on (``cfg.train.unlabelled`` of
    them), or None when the copycat trains on its answers alone or the run has none yet."""
    if cfg.train.semi == "none" or not run.store.is_file():
        return None
    return unqueried_images(run, cfg, cfg.train.unlabelled)


CHOICE_NAME = "choice.json"  # in checkpoints/: what an auto arch chose, and among which


def _resumed_choice(run: RunDir, config: TrainConfig, candidates: list[str]) -> ArchChoice | None:
    """The architecture an interrupted or finished training chose among ``candidates`` (an
    auto arch's; none for a named arch), as its ``last.pt`` names it, so that a rerun resumes
    it instead of choosing again. A choice made among other candidates is refused, naming the
    fix."""
    last = run.checkpoints / "last.pt"
    if not candidates or not last.is_file():
        return None
    arch = str(load_checkpoint(last)["config"].get("arch", AUTO_ARCH))
    if is_auto(arch):
        return None
    made = run.checkpoints / CHOICE_NAME
    # a run trained before choice.json was written: its choice was among the candidates if
    # the architecture it trained is one of them
    recorded: dict[str, Any] = read_json(made) if made.is_file() else {"candidates": candidates}
    if arch not in candidates or recorded.get("candidates") != candidates:
        among = ", ".join(recorded.get("candidates") or [arch])
        raise StaleCheckpointError(
            f"{last} is a {arch} copy, chosen among {among}; --arch {config.arch} chooses among "
            f"{', '.join(candidates)}. Delete {run.checkpoints} to choose again (the answers "
            "are kept), or name the architecture to train"
        )
    card = read_json(run.copycat_card) if run.copycat_card.is_file() else {}
    heldout = recorded.get("heldout") or card.get("arch_choice") or {}
    log.info("arch auto: %s, as chosen by the training %s resumes", arch, last)
    return ArchChoice(arch, dict(heldout))


def _record_choice(run: RunDir, choice: ArchChoice, candidates: list[str]) -> None:
    """Write what an auto arch chose among ``candidates`` (none: not auto, nothing written),
    before the copy trains: a rerun resumes that choice only under the same candidates."""
    if not candidates:
        return
    record = {"candidates": candidates, "arch": choice.arch, "heldout": choice.heldout}
    write_atomic(run.checkpoints / CHOICE_NAME, json.dumps(record, indent=2) + "\n")


def train_copycat(
    run: RunDir,
    *,
    config: TrainConfig,
    on_step: StepFn | None = None,
    unlabelled: torch.Tensor | None = None,
) -> FitResult:
    """Train a copycat on the run's fake dataset and save it beside the store.

    A held-out share (``config.val_fraction``) of the answers scores agreement each epoch; the
    best epoch is the copycat kept. Soft labels are used when ``labels`` is ``soft``, or
    ``auto`` and every answer carried probabilities. With ``config.semi == "fixmatch"``,
    ``unlabelled`` (M, C, H, W) uint8 pool images also train it (see copycat.train.semi).
    """
    if not run.store.is_file():
        raise CopycatError(f"no answers in {run.root}; run `copycat steal --run-dir {run.root}`")
    with AnswerStore(run.store) as store:
        data = store.load()
        num_classes = int(store.meta()["num_classes"])
    if config.labels == "soft" and data.probs is None:
        raise CopycatError("labels='soft' but the oracle gave labels only; use --labels hard")
    soft = data.probs is not None and config.labels in ("auto", "soft")
    val_idx, tr_idx = held_out_split(len(data), config=config)
    n_val = len(val_idx)
    answers = data.probs if soft and data.probs is not None else data.labels
    shape = tuple(data.images.shape[1:])
    # what an auto arch chooses among for these images (none for a named one)
    candidates = (
        list(auto_candidates(config.arch, channels=int(shape[0]))) if is_auto(config.arch) else []
    )
    choice = _resumed_choice(run, config, candidates)
    if choice is None:
        choice = choose_arch(
            data.images,
            answers,
            labels=data.labels,
            num_classes=num_classes,
            config=config,
            checkpoint_dir=run.checkpoints,
            on_step=on_step,
        )
        _record_choice(run, choice, candidates)
    arch = choice.arch
    # checkpoints record the architecture trained, so a resume compares what was trained
    config = replace(config, arch=arch)
    n_copies = config.copies_for(len(data))
    log.info(
        "training %s on %d answers (%s labels), %d held out, %d epochs%s",
        arch,
        len(tr_idx),
        "soft" if soft else "hard",
        n_val,
        config.epochs_for(len(tr_idx)),
        f", {n_copies} copies" if n_copies > 1 else "",
    )
    copy = fit_copy(
        data.images,
        answers,
        labels=data.labels,
        num_classes=num_classes,
        config=config,
        choice=choice,
        checkpoint_dir=run.checkpoints,
        on_step=on_step,
        unlabelled=unlabelled,
    )
    result = copy.result
    save_weights(run.copycat_weights, copy.model.state_dict())
    card = {
        "arch": arch,
        "input_shape": list(shape),
        "num_classes": num_classes,
        "mean": copy.model.normalize.mean.flatten().tolist(),
        "std": copy.model.normalize.std.flatten().tolist(),
        "labels": "soft" if soft else "hard",
        "best_epoch": copy.best_epochs[0],
        "train_samples": len(tr_idx),
        "val_agreement": result.best_val_agreement,
        # arch auto on grey answers: each candidate's held-out agreement (copycat.train.choose)
        "arch_choice": choice.heldout,
        # > 1: the copy is the mean of this many copies' probabilities (copycat.train.copies);
        # val_agreement and best_epoch are the first one's, train_seconds the sum
        "members": len(copy.results),
        "samples_per_s": result.samples_per_s,
        "train_seconds": result.seconds,
    }
    if len(copy.results) > 1:
        card["member_val_agreements"] = [r.best_val_agreement for r in copy.results]
    write_atomic(run.copycat_card, json.dumps(card, indent=2) + "\n")
    write_metrics(run.metrics, result.history)
    drop_candidates(run.checkpoints)
    run.record("train", asdict(config))
    return result


def train_stage(
    cfg: ExperimentConfig, *, command: str | None = None, on_step: StepFn | None = None
) -> FitResult:
    run = RunDir.at(cfg.run_dir)
    result = train_copycat(run, config=cfg.train, on_step=on_step, unlabelled=semi_images(run, cfg))
    run.record("train", to_jsonable(cfg.train), command)
    return result
