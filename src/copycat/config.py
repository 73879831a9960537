"""Configuration of every stage: frozen keyword-only dataclasses, TOML in, JSON out.

Defaults live here, once. Each ``__post_init__`` validates its fields with a message that names
the field, the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from copycat.config_http import RESPONSE_FORMATS as RESPONSE_FORMATS
from copycat.config_http import SEND_AS as SEND_AS
from copycat.config_http import HttpOracleConfig
from copycat.config_http import ServeConfig as ServeConfig
from copycat.errors import ConfigError

T = TypeVar("T")

# how the pool's NPD sets share the queries (``steal.set_weights``)
SET_WEIGHTS = ("auto", "pool", "yield", "yield-seed", "top", "earned")


def _check(ok: bool, name: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid; accepted: {accepted}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AugmentConfig:
    """Query-time augmentation of pool images (the paper augments its fake dataset)."""

    enabled: bool = True
    hflip: float = 0.5
    vflip: float = 0.0
    rotation: float = 10.0
    # Wide crops (30% to 100% of the image) measured best for NPD pools; see the README.
    scale: tuple[float, float] = (0.3, 1.0)
    aspect: tuple[float, float] = (0.75, 1.333)
    brightness: float = 0.25
    contrast: float = 0.25
    invert: float = 0.0
    # Colour images only (grey ones have no hue): each image's hue turned by up to this
    # fraction of the colour circle either way (0.5: any hue), and its saturation scaled by
    # 1 +- saturation; 0 leaves colours as they are. Off: on emoji at 5,000 queries any hue
    # lost (-0.113, -0.060) and hue 0.1 with saturation 0.5 was level (docs/suite.md).
    hue: float = 0.0
    saturation: float = 0.0
    # The share of images sent whole: the full base image, no crop, rotation or jitter.
    whole: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "invert", "whole"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, f"augment.{name}", v, "a probability in [0, 1]")
        _check(0.0 <= self.rotation <= 180.0, "augment.rotation", self.rotation, "0..180 degrees")
        lo, hi = self.scale
        _check(
            0.0 < lo <= hi <= 1.0, "augment.scale", self.scale, "(lo, hi) with 0 < lo <= hi <= 1"
        )
        alo, ahi = self.aspect
        _check(
            0.0 < alo <= 1.0 <= ahi,
            "augment.aspect",
            self.aspect,
            "(lo, hi) with 0 < lo <= 1 <= hi (width / height of the crop)",
        )
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            _check(0.0 <= v < 1.0, f"augment.{name}", v, "a jitter strength in [0, 1)")
        _check(0.0 <= self.hue <= 0.5, "augment.hue", self.hue, "[0, 0.5] of the colour circle")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """Where unlabelled query images come from: ``npd``, ``folder:PATH``, ``pd:NAME``, ``noise``,
    or a ``+``-joined mix such as ``npd+pd:fashion-mnist`` weighted by ``mix``."""

    spec: str = "npd"
    mix: tuple[float, ...] = ()
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        _check(bool(self.spec.strip()), "pool.spec", self.spec, "npd, folder:PATH, pd:NAME, noise")
        parts = self.spec.split("+")
        _check(
            not self.mix or len(self.mix) == len(parts),
            "pool.mix",
            self.mix,
            f"one weight per pool part ({len(parts)} for {self.spec!r}) or empty for equal",
        )
        _check(
            all(w >= 0 for w in self.mix) and (not self.mix or sum(self.mix) > 0),
            "pool.mix",
            self.mix,
            "non-negative weights with a positive sum",
        )
        _check(self.max_pixels >= 1_000_000, "pool.max_pixels", self.max_pixels, ">= 1000000")


@dataclass(frozen=True, slots=True, kw_only=True)
class StealConfig:
    """How the oracle is queried: the budget is the number of answered images, never exceeded."""

    budget: int = 20_000
    batch_size: int = 256
    # Chosen on the suite's validation splits (docs/suite.md): jacobian is ahead of balanced at
    # 20,000 queries on every target (digits +0.022, Fashion-MNIST +0.006, emoji +0.033 median
    # over 3 seeds) and ahead or level at 5,000 (+0.056, -0.002, 0.000).
    selection: str = "jacobian"
    seed_fraction: float = 0.5
    # At most this many random seed answers (None: no cap); with a cap the interim copycat is
    # refitted each time the answers double, so every prefix of a run was selected as a run of
    # that budget would be (its budget curve measures the selection, not just the seed share).
    seed_max: int | None = None
    # candidates the interim copycat scores per query sent; where set_weights thins them to the
    # sets' shares, the pool is drawn that much more so that this many remain
    candidates_per_query: int = 5
    # How often the interim copycat is fitted over a run (None: the selection's own number,
    # e.g. 4 for jacobian, 2 for balanced; see copycat.steal.strategies).
    refits: int | None = None
    # Whether each refit continues from the previous interim copycat (warm) or starts afresh;
    # None: the selection's own choice (warm for jacobian, boundary, mixup, active and wide,
    # fresh for balanced; see copycat.steal.strategies). Fresh jacobian refits lost on digits
    # at 2,000 queries (-0.021 over 10 seeds; docs/suite.md).
    warm_refits: bool | None = None
    # A warm refit trains on at most this many answers: every answer since the last fit, the
    # rest a seeded random draw of the earlier ones (None: every answer). The copy it continues
    # has seen the earlier answers, so the refits' cost stays flat as the store grows instead of
    # growing with it (8 warm refits of 3 epochs over every answer cost about twice the final
    # copy's training at 20,000 answers, and grow with the budget). Not the default: 5,000 saved
    # about a third of a 20,000-query steal's time and lost on every Fashion-MNIST seed
    # (docs/suite.md, "Warm refits on fewer answers").
    refit_answers: int | None = None
    # Synthesis (jacobian, boundary, mixup): at most this share of each batch of queries is made
    # of synthesized images; jacobian's pushes take up to synth_steps signed-gradient steps on
    # the interim copycat, each synth_step_size of the pixel range, and stop once the interim
    # copycat gives the class it was pushed to (with probability >= synth_confidence, if > 0).
    synth_share: float = 0.5
    synth_steps: int = 6
    synth_step_size: float = 0.03
    synth_confidence: float = 0.0
    # synthesis (jacobian, boundary, mixup) starts once this many answers are in; before it,
    # the strategy picks among pool images only. 5,000: synthesis from an interim copycat of
    # fewer answers lost to pool picks at 5,000 queries on every suite target (docs/suite.md,
    # "Synthesis from 5,000 answers"); at 10,000 queries and up the seed share reaches it first
    synth_from: int = 5_000
    # hard cap on images that may be billed (retries and every run included); None: no cap
    max_billed: int | None = None
    # How the pool's NPD sets share the queries: "pool" as the pool's weights draw them;
    # "yield" by each set's rare-class yield in the seed share's answers (the share of its
    # answers whose class is under half its fair share), so the set that gives rare classes
    # is drawn more (copycat.steal.selection.set_shares); "yield-seed" in the seed share only,
    # the picks after it made among the pool's own candidates; "top" as "yield", the set of
    # highest yield taking all but the floor; "earned" keeps the pool's weights, except that a
    # set after the pool's first (the pen strokes after clip-art) whose yield is below the
    # first's drops to the floor. "auto": "earned" for a budget of at most
    # copycat.steal.selection.EARNED_UP_TO queries, "pool" above it (and for the adaptive
    # selection, whose bandit weighs the sets itself). "earned" is the pool's steal on digits
    # (the strokes earn their share), gains on Fashion-MNIST at 2,000 queries on every seed
    # (+0.056 on average), is level at 5,000 (+0.007) and loses at 20,000 (-0.017); "yield",
    # "yield-seed" and "top" are level on digits at 2,000 and behind on Fashion-MNIST
    # (docs/suite.md, "Which set gives the rare classes", "Strokes that must earn their share",
    # "Strokes earn their share up to 5,000 queries").
    set_weights: str = "auto"

    def __post_init__(self) -> None:
        _check(self.budget >= 1, "steal.budget", self.budget, "an integer >= 1")
        _check(self.synth_from >= 0, "steal.synth_from", self.synth_from, "an integer >= 0")
        _check(
            self.max_billed is None or self.max_billed >= 1,
            "steal.max_billed",
            self.max_billed,
            "an integer >= 1, or None for no cap",
        )
        _check(1 <= self.batch_size <= 65_536, "steal.batch_size", self.batch_size, "1..65536")
        # the names are checked against copycat.steal.registry.SELECTIONS when the steal starts
        _check(
            self.selection.replace("-", "").isalnum(),
            "steal.selection",
            self.selection,
            "random, balanced, wide, active, jacobian, mixup or adaptive",
        )
        _check(0.0 < self.seed_fraction <= 1.0, "steal.seed_fraction", self.seed_fraction, "(0, 1]")
        _check(
            self.seed_max is None or self.seed_max >= 1,
            "steal.seed_max",
            self.seed_max,
            "an integer >= 1, or None for no cap",
        )
        _check(
            self.candidates_per_query >= 1,
            "steal.candidates_per_query",
            self.candidates_per_query,
            ">= 1",
        )
        _check(
            self.refits is None or 1 <= self.refits <= 1000,
            "steal.refits",
            self.refits,
            "an integer in 1..1000, or None for the selection's own number",
        )
        _check(
            self.refit_answers is None or self.refit_answers >= 1,
            "steal.refit_answers",
            self.refit_answers,
            "an integer >= 1, or None for every answer",
        )
        _check(0.0 <= self.synth_share <= 1.0, "steal.synth_share", self.synth_share, "[0, 1]")
        _check(0 <= self.synth_steps <= 1000, "steal.synth_steps", self.synth_steps, "0..1000")
        _check(
            0.0 < self.synth_step_size <= 1.0,
            "steal.synth_step_size",
            self.synth_step_size,
            "(0, 1], a fraction of the pixel range",
        )
        _check(
            0.0 <= self.synth_confidence < 1.0,
            "steal.synth_confidence",
            self.synth_confidence,
            "[0, 1): 0 stops a push at the top label",
        )
        _check(
            self.set_weights in SET_WEIGHTS,
            "steal.set_weights",
            self.set_weights,
            ", ".join(SET_WEIGHTS),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Training of a copycat (or of a target) on images held in memory."""

    # "auto": cnn-wide for colour images; for grey ones cnn-small or cnn-wide, whichever
    # agrees more with up to 5,000 answers it did not train on after training on the first
    # 5,000 (copycat.train.choose); a selection's interim copycat stays cnn-small.
    # "auto:A,B,...": the same choice among the architectures named, for any images.
    arch: str = "auto"
    # None: min_epochs, raised until training takes min_steps optimiser steps, so a small store
    # is not undertrained; a number: exactly that many epochs. See epochs_at.
    epochs: int | None = None
    min_epochs: int = 10
    min_steps: int = 0
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    labels: str = "auto"
    balance: bool = True
    # The fake dataset is augmented when queried; shifting and flipping it again at training
    # time measured 2-3 points of performance worse on NPD answers.
    augment: bool = False
    label_smoothing: float = 0.0
    # > 0: mixup at training time, each batch's images mixed in pairs with a weight drawn from
    # Beta(mixup, mixup), the loss mixed alike (Zhang et al., ICLR 2018); 0 turns it off
    mixup: float = 0.0
    # > 0: the copy kept (scored, checkpointed, returned) is an exponential moving average of
    # the weights and batch-norm statistics over the optimiser steps, with this decay per step
    # (warmed up as (1 + t) / (10 + t) over the first steps); 0: the weights as trained.
    # Off: 0.995 was level on every suite target and budget measured (docs/suite.md).
    ema: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    # Soft labels (targets that reveal probabilities) are matched at this temperature. 2 beat 1
    # on every seed of both validation targets of benchmarks/methods.py (digits +0.07, Fashion-
    # MNIST +0.01 performance at 1-2k queries); 4 was as good on average, with a wider spread.
    temperature: float = 2.0
    # "fixmatch": also train on `unlabelled` pool images never queried, with pseudo-labels the
    # copycat gives with probability >= semi_threshold (see copycat.train.semi)
    semi: str = "none"
    unlabelled: int = 10_000
    semi_threshold: float = 0.95
    semi_weight: float = 1.0
    # > 1 (copycats only): the copy is the mean of the probabilities of this many copies
    # trained alike on the same answers, with seeds seed + 1000 i (each its own held-out
    # share), the architecture chosen once (copycat.train.copies). A store of more than
    # ensemble_answers answers trains one copy: training time grows with the store, and the
    # gain shrinks (+0.009 with three at 20,000 on Fashion-MNIST). Five up to 5,000, on
    # average over one copy: digits at 2,000 +0.038, Fashion-MNIST at 2,000 and 5,000 +0.015,
    # emoji at 5,000 +0.028 (docs/suite.md, "The mean of five copies, in the library and the
    # default up to 5,000 answers").
    ensemble: int = 5
    ensemble_answers: int = 5_000

    def __post_init__(self) -> None:
        _check(self.ensemble >= 1, "train.ensemble", self.ensemble, "an integer >= 1 (1: off)")
        _check(
            self.ensemble_answers >= 0,
            "train.ensemble_answers",
            self.ensemble_answers,
            "an integer >= 0",
        )
        _check(self.temperature > 0, "train.temperature", self.temperature, "a float > 0")
        _check(self.semi in ("none", "fixmatch"), "train.semi", self.semi, "none or fixmatch")
        _check(self.unlabelled >= 1, "train.unlabelled", self.unlabelled, "an integer >= 1")
        _check(
            0.0 < self.semi_threshold <= 1.0,
            "train.semi_threshold",
            self.semi_threshold,
            "a probability in (0, 1]",
        )
        _check(self.semi_weight >= 0, "train.semi_weight", self.semi_weight, "a float >= 0")
        _check(
            self.epochs is None or self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1"
        )
        _check(self.min_epochs >= 1, "train.min_epochs", self.min_epochs, "an integer >= 1")
        _check(self.min_steps >= 0, "train.min_steps", self.min_steps, "an integer >= 0")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _check(self.lr > 0, "train.lr", self.lr, "a positive float")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(
            self.labels in ("auto", "hard", "soft"),
            "train.labels",
            self.labels,
            "'auto', 'hard' or 'soft'",
        )
        _check(
            0.0 <= self.label_smoothing < 1.0,
            "train.label_smoothing",
            self.label_smoothing,
            "[0, 1)",
        )
        _check(self.mixup >= 0, "train.mixup", self.mixup, "a float >= 0 (0: off)")
        _check(0.0 <= self.ema < 1.0, "train.ema", self.ema, "a decay in [0, 1) (0: off)")
        _check(0.0 <= self.val_fraction < 0.5, "train.val_fraction", self.val_fraction, "[0, 0.5)")
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "train.device",
            self.device,
            "auto, cpu, cuda or cuda:N",
        )

    def epochs_at(self, steps_per_epoch: int) -> int:
        """Epochs to train with ``steps_per_epoch`` optimiser steps in each: ``epochs`` if set,
        else ``min_epochs`` raised until the run takes at least ``min_steps`` steps."""
        if self.epochs is not None:
            return self.epochs
        return max(self.min_epochs, -(-self.min_steps // max(1, steps_per_epoch)))

    def epochs_text(self) -> str:
        """The epochs in words, e.g. for a benchmark's setup line."""
        if self.epochs is not None:
            return f"{self.epochs} epochs"
        more = f", more to reach {self.min_steps:,} optimiser steps" if self.min_steps else ""
        return f"{self.min_epochs} epochs{more}"

    def steps_per_epoch(self, n: int) -> int:
        """Optimiser steps in an epoch over ``n`` samples: full batches only (the last partial
        one is dropped), and a set smaller than one batch is one batch."""
        return max(1, n // max(1, min(self.batch_size, n)))

    def epochs_for(self, n: int) -> int:
        """Epochs to train on ``n`` samples."""
        return self.epochs_at(self.steps_per_epoch(n))

    def copies_for(self, answers: int) -> int:
        """Copies a copycat of a store of ``answers`` answers is the mean of: ``ensemble`` up
        to ``ensemble_answers`` answers, else one."""
        return self.ensemble if answers <= self.ensemble_answers else 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetConfig:
    """Training of the demo target (the oracle a model owner would deploy)."""

    dataset: str = "fashion-mnist"
    out: str = "targets/fmnist"
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            arch="cnn-target", epochs=6, lr=4e-3, balance=False, augment=True, val_fraction=0.0
        )
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentConfig:
    """Everything ``copycat run`` needs: each stage reads and writes ``run_dir``."""

    run_dir: str = "runs/demo"
    oracle: str = "torch:targets/fmnist"
    output: str = "label"
    test_set: str = "fashion-mnist:test"
    target: TargetConfig | None = None
    pool: PoolConfig = field(default_factory=PoolConfig)
    steal: StealConfig = field(default_factory=StealConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # [http]: how an http(s):// or oip+http(s):// oracle is queried (ignored by other oracles);
    # the API key only ever comes from the environment variable named by api_key_env.
    http: HttpOracleConfig = field(default_factory=HttpOracleConfig)
    # Defences put in front of a local target (``--defence``), innermost first.
    defences: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """``copycat audit``: each attack against each defence at each budget and seed; one run
    directory per cell under ``out``."""

    out: str = "audits/audit"
    oracle: str = "torch:targets/fmnist"
    attacks: tuple[str, ...] = ("npd-labels", "npd-probs", "pd-labels")
    defences: tuple[str, ...] = ("none",)
    budgets: tuple[int, ...] = (2000,)
    seeds: tuple[int, ...] = (0,)
    test_set: str = "fashion-mnist:test"
    pd_pool: str = ""  # the PD attacks' pool; empty: pd:<the test set's dataset>
    benign_images: int = 2000  # test images sent as benign traffic per defence
    selection: str = StealConfig().selection  # of each attack's steal
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(bool(self.attacks), "audit.attacks", self.attacks, "one attack or more")
        _check(bool(self.defences), "audit.defences", self.defences, "one defence or more")
        _check(
            bool(self.budgets) and all(b >= 1 for b in self.budgets),
            "audit.budgets",
            self.budgets,
            "budgets >= 1, e.g. 2k,10k",
        )
        _check(bool(self.seeds), "audit.seeds", self.seeds, "one seed or more")
        _check(self.benign_images >= 1, "audit.benign_images", self.benign_images, ">= 1")


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from plain data, refusing unknown keys by name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in [{where or cls.__name__}]; accepted: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where=f"{where}.{name}".strip("."))
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, *, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, where=where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"[{where}] must be a table, got {value!r}")
        return from_dict(hint, value, where=where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}={value!r} is invalid; accepted: a list")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        raise ConfigError(f"{where}={value!r} is invalid; accepted: {words[hint]}")
    return value


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read an experiment TOML file (see ``configs/demo.toml``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found; pass an existing TOML file to --config")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from exc
    secrets = sorted({"api_key", "key", "token", "password"} & set(data.get("http") or {}))
    if secrets:
        raise ConfigError(
            f"[http] {secrets[0]} in {p}: a secret never goes into an experiment file; export "
            "it in an environment variable and name that variable with api_key_env"
        )
    return from_dict(ExperimentConfig, data)


def to_jsonable(cfg: Any) -> Any:
    """A dataclass config as plain JSON data (tuples become lists)."""
    return dataclasses.asdict(cfg)
