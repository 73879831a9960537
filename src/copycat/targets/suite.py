"""The development suite of targets: several problems and architectures to measure steal
strength on, so that defaults are not tuned on one target.

Each target names its labelled set (train / val / test splits, see :mod:`copycat.data`), its
architecture and training recipe, and the pool an NPD steal of it uses. ``build_suite`` trains
the missing ones into ``ROOT/NAME`` (``make suite`` calls it through ``copycat target suite``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from copycat.config import TrainConfig
from copycat.errors import ConfigError, CopycatError
from copycat.oracles.local import CARD_NAME, WEIGHTS_NAME, TargetCard
from copycat.runs import save_atomic
from copycat.targets.publish import train_target_on
from copycat.train.fit import StepFn

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteTarget:
    """One target of the suite: what it learns, how, and what an NPD steal of it queries."""

    name: str
    dataset: str
    train: TrainConfig
    # words of the NPD files left out of its pool (images of the target's own classes)
    exclude: tuple[str, ...] = ()
    quick_epochs: int = 1  # for benchmark --quick runs
    # False: a check target, trained only when named (``names``, ``--only``)
    core: bool = True

    @property
    def npd_pool(self) -> str:
        """The ``--pool`` of an NPD steal of this target: every NPD set, less its classes."""
        return self.npd_pool_of(())

    def npd_pool_of(self, sets: tuple[str, ...], weights: tuple[float, ...] = ()) -> str:
        """The NPD pool of only ``sets`` (the default set when empty), drawn by ``weights``
        (equally when empty), less the target's classes."""
        parts = [f"sets={','.join(sets)}"] if sets else []
        parts += [f"weights={','.join(f'{w:g}' for w in weights)}"] if weights else []
        parts += [f"exclude={','.join(self.exclude)}"] if self.exclude else []
        return "npd" + (":" + ";".join(parts) if parts else "")

    def config(self, *, quick: bool = False, device: str = "auto", seed: int = 0) -> TrainConfig:
        epochs = self.quick_epochs if quick else self.train.epochs
        return dataclasses.replace(self.train, epochs=epochs, device=device, seed=seed)


def _target_train(arch: str, epochs: int, *, augment: bool = True) -> TrainConfig:
    return TrainConfig(
        arch=arch, epochs=epochs, lr=4e-3, balance=False, augment=augment, val_fraction=0.0
    )


# NPD images left out of each target's pool: files whose path names the target's classes
# (openclipart's people/clothing and Tux Paint's clothes hold t-shirts, shoes and boots;
# Scratch's Letters costumes and Tux Paint's alphabets and math stamps hold digits;
# people/smilies and symbols/faces hold emoji-like faces). See docs/suite.md.
GARMENT_WORDS = (
    "people/clothing", "clothes", "shirt", "dress", "coat", "trouser", "pants", "jeans",
    "sweater", "pullover", "jacket", "shoe", "sneaker", "sandal", "boot", "bag", "purse", "tote",
    # Sweet Home 3D's skirt, dress and dressed mannequins (French names); no clip-art file
    # holds these, so the clip-art pool is unchanged
    "jupe", "robe.", "mannequin",
)  # fmt: skip
# "words_sample": GCompris' word pictures, which include drawn numerals ("three", "ten");
# "calendar": Oxygen's calendar icons show a date (no file of the other sets names one)
DIGIT_WORDS = (
    "number", "digit", "numeral", "letters", "alphabets", "math", "clock", "words_sample",
    "calendar",
)  # fmt: skip
# "emotes": Oxygen's face icons (no file of the other sets names it)
EMOJI_WORDS = ("smil", "emoticon", "emoji", "faces", "emotes")

SUITE: tuple[SuiteTarget, ...] = (
    # The demo's target: a two-block CNN on Fashion-MNIST (28x28 grey, 10 garments).
    SuiteTarget(
        name="fmnist",
        dataset="fashion-mnist",
        train=_target_train("cnn-target", 6),
        exclude=GARMENT_WORDS,
    ),
    # Handwritten digits (28x28 grey, 1,259 training scans): the same CNN, more epochs; no
    # flips, they change a digit.
    SuiteTarget(
        name="digits",
        dataset="digits",
        train=_target_train("cnn-target", 20, augment=False),
        exclude=DIGIT_WORDS,
        quick_epochs=10,
    ),
    # Emoji by category (32x32 RGB, 9 classes): a three-block CNN, another architecture.
    SuiteTarget(
        name="emoji",
        dataset="emoji",
        train=_target_train("cnn-wide", 30),
        exclude=EMOJI_WORDS,
        quick_epochs=10,
    ),
    # Checks: the same sets with the two architectures swapped, so that a copycat default is
    # not read off a copy that merely matches its target's architecture (the grey targets
    # above are cnn-target, the colour one cnn-wide). Built when named. They showed that grey
    # images need a choice of copy (copycat.train.choose), so that choice was made on them too.
    SuiteTarget(
        name="fmnist-wide",
        dataset="fashion-mnist",
        train=_target_train("cnn-wide", 6),
        exclude=GARMENT_WORDS,
        core=False,
    ),
    SuiteTarget(
        name="emoji-small",
        dataset="emoji",
        train=_target_train("cnn-target", 30),
        exclude=EMOJI_WORDS,
        quick_epochs=10,
        core=False,
    ),
    # A residual network (ResNet-18, its stem sized for 28 pixels) on the digits: an
    # architecture no copycat candidate resembles, added after every default was chosen.
    SuiteTarget(
        name="digits-resnet",
        dataset="digits",
        train=_target_train("resnet18", 20, augment=False),
        exclude=DIGIT_WORDS,
        quick_epochs=10,
        core=False,
    ),
)


def suite_target(name: str) -> SuiteTarget:
    for t in SUITE:
        if t.name == name:
            return t
    raise ConfigError(
        f"unknown suite target {name!r}; accepted: {', '.join(t.name for t in SUITE)}"
    )


def reuse_mismatch(t: SuiteTarget, card: TargetCard, config: TrainConfig) -> str | None:
    """Why a published target (``card``) is not ``t`` trained with ``config``; None: it is
    (the same architecture, labelled split, epochs and seed)."""
    wanted = {
        "arch": config.arch,
        "dataset": f"{t.dataset}:train",
        "epochs": config.epochs,
        "seed": config.seed,
    }
    found = {
        "arch": card.arch,
        "dataset": card.dataset,
        "epochs": card.extra.get("epochs"),
        "seed": card.extra.get("seed"),
    }
    diff = [f"{k} {found[k]!r}, not {v!r}" for k, v in wanted.items() if found[k] != v]
    return "; ".join(diff) or None


def _reuse(t: SuiteTarget, source: Path, folder: Path, config: TrainConfig) -> bool:
    """Copy the published target in ``source`` (card and weights) to ``folder`` if it is ``t``
    trained with ``config``; False (with the reason logged) if it is not. A ``source`` with
    no readable card is refused (:class:`ConfigError`)."""
    try:
        card = TargetCard.load(source)
    except CopycatError as exc:  # a mistyped path: training instead would take minutes unasked
        raise ConfigError(
            f"--reuse {t.name}={source}: {exc}; or leave {t.name} out of --reuse to train it"
        ) from exc
    why = reuse_mismatch(t, card, config)
    if why is None and not (source / WEIGHTS_NAME).is_file():
        why = f"no {WEIGHTS_NAME}"
    if why is not None:
        log.warning("suite target %s: not reusing %s (%s); training it", t.name, source, why)
        return False
    with (source / WEIGHTS_NAME).open("rb") as weights:
        save_atomic(folder / WEIGHTS_NAME, lambda f: shutil.copyfileobj(weights, f))
    # the card last (a folder with a card is complete), named as the suite names the target
    dataclasses.replace(card, name=t.name).save(folder)
    log.info("suite target %s: reused %s (%s, %s)", t.name, source, card.arch, card.dataset)
    return True


def build_suite(
    root: str | Path,
    *,
    names: tuple[str, ...] | None = None,
    quick: bool = False,
    device: str = "auto",
    seed: int = 0,
    reuse: Mapping[str, Path] | None = None,
    on_step: StepFn | None = None,
) -> dict[str, TargetCard]:
    """Train every core suite target (or those in ``names``) missing under ``root``; returns
    the card of each, trained now or found. ``reuse``: published targets by suite name (e.g.
    the demo's shipped ``targets/fmnist``), copied in place of training where their card says
    they are the suite's recipe (architecture, split, epochs, seed); no ONNX file is made
    for them (the suite's oracles are ``torch:``)."""
    cards: dict[str, TargetCard] = {}
    chosen = tuple(t for t in SUITE if t.core) if names is None else tuple(map(suite_target, names))
    known = {t.name for t in SUITE}
    unknown = sorted(set(reuse or {}) - known)
    if unknown:
        raise ConfigError(
            f"--reuse names {', '.join(unknown)}, not suite targets; accepted: "
            + ", ".join(sorted(known))
        )
    for t in chosen:
        folder = Path(root) / t.name
        if not (folder / CARD_NAME).is_file():
            cfg = t.config(quick=quick, device=device, seed=seed)
            source = (reuse or {}).get(t.name)
            if source is None or not _reuse(t, Path(source), folder, cfg):
                log.info("training suite target %s (%s, %s)", t.name, t.dataset, t.train.arch)
                train_target_on(t.dataset, out=folder, config=cfg, on_step=on_step)
        cards[t.name] = TargetCard.load(folder)
    return cards
