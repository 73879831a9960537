"""Class coverage of the fake dataset: which of the oracle's classes the answers hold, and how
unevenly. A copy cannot learn a class the oracle was never made to say, so the histogram, the
imbalance ratio and the rarest class are shown live, written to ``steal.json`` and reported.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

# A class under this share of the answers is flagged: a copy learns it poorly, if at all.
RARE_SHARE = 0.01


@dataclass(frozen=True, slots=True, kw_only=True)
class Coverage:
    """How the answers spread over the oracle's classes.

    ``imbalance_ratio`` is most / least frequent class count; ``None`` when a class has no
    answer at all (the ratio is unbounded) or there are no answers yet."""

    histogram: list[int]
    class_names: list[str]
    total: int
    shares: list[float]
    imbalance_ratio: float | None
    rarest_class: int
    rarest_name: str
    rarest_count: int
    missing: list[str]  # classes with no answer
    rare: list[str]  # classes with answers, but under ``rare_share`` of them
    rare_share: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_names_of(oracle: object, num_classes: int) -> list[str]:
    """The oracle's class names where it publishes them (a target card, a plain-JSON label map),
    else ``0``, ``1``, ..."""
    card = getattr(oracle, "card", None)
    names = getattr(card, "class_names", None)
    if names is None:
        names = getattr(getattr(oracle, "config", None), "label_map", None) or None
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def class_coverage(
    histogram: list[int],
    *,
    class_names: list[str] | tuple[str, ...] | None = None,
    rare_share: float = RARE_SHARE,
) -> Coverage:
    """Coverage of a label histogram (answers per class, in class order)."""
    hist = [int(h) for h in histogram]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(hist))]
    if len(names) != len(hist):
        raise ValueError(f"{len(names)} class names for a histogram of {len(hist)} classes")
    total = sum(hist)
    shares = [h / total if total else 0.0 for h in hist]
    rarest = min(range(len(hist)), key=lambda i: (hist[i], i)) if hist else 0
    low = min(hist) if hist else 0
    ratio = max(hist) / low if total and low > 0 else None
    return Coverage(
        histogram=hist,
        class_names=names,
        total=total,
        shares=[round(s, 6) for s in shares],
        imbalance_ratio=round(ratio, 3) if ratio is not None else None,
        rarest_class=rarest,
        rarest_name=names[rarest] if names else "",
        rarest_count=hist[rarest] if hist else 0,
        missing=[n for n, h in zip(names, hist, strict=True) if total and h == 0],
        rare=[
            n
            for n, h, s in zip(names, hist, shares, strict=True)
            if total and h > 0 and s < rare_share
        ],
        rare_share=rare_share,
    )


def ratio_text(cov: Coverage) -> str:
    """``38:1``, or ``unbounded`` when a class has no answer."""
    if cov.imbalance_ratio is None:
        return "unbounded" if cov.total else "-"
    return (
        f"{cov.imbalance_ratio:.0f}:1"
        if cov.imbalance_ratio >= 10
        else f"{cov.imbalance_ratio:.1f}:1"
    )


def progress_text(cov: Coverage, *, max_histogram: int = 12) -> str:
    """One line for a live progress bar: the histogram (up to ``max_histogram`` classes), the
    rarest class and the imbalance ratio."""
    if not cov.total:
        return ""
    share = cov.rarest_count / cov.total
    parts = [f"labels {cov.histogram}"] if len(cov.histogram) <= max_histogram else []
    parts.append(f"rarest {cov.rarest_name} {cov.rarest_count} ({share:.1%})")
    parts.append(f"imbalance {ratio_text(cov)}")
    return " · ".join(parts)


# What to do about a class the pool does not make the oracle say (docs/suite.md: pen strokes
# lifted a handwriting target's rarest digit from 0.4% to 3.3% of 2,000 answers).
WIDEN_POOL = (
    "Widen the pool toward the target's domain: more NPD sets (e.g. --pool "
    "'npd:sets=clipart,stamps,sprites,strokes', keeping any exclude=), your own images "
    "(--pool folder:PATH), or a larger budget"
)


def warn_rare(cov: Coverage) -> list[str]:
    """Log a warning naming the classes under ``rare_share`` of the answers (or with none);
    returns the warning lines (empty when every class is covered)."""
    lines = []
    if cov.missing:
        lines.append(
            f"class coverage: the oracle never answered {', '.join(cov.missing)} in "
            f"{cov.total} answers; the copy cannot learn them. {WIDEN_POOL}"
        )
    if cov.rare:
        detail = ", ".join(f"{n} {cov.histogram[cov.class_names.index(n)]}" for n in cov.rare)
        lines.append(
            f"class coverage: {detail} of {cov.total} answers (under {cov.rare_share:.0%} "
            f"each); the copy will learn these classes poorly. {WIDEN_POOL}"
        )
    for line in lines:
        log.warning(line)
    return lines
