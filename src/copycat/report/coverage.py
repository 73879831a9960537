"""The report's class-coverage section: imbalance, rarest class and the classes under 1% of
the answers, as markdown lines."""

from __future__ import annotations

from copycat.steal.coverage import class_coverage, ratio_text


def coverage_lines(hist: list[int], names: list[str]) -> list[str]:
    """Markdown lines on how the answers cover the oracle's classes."""
    cov = class_coverage(hist, class_names=names)
    if not cov.total:
        return []
    share = cov.rarest_count / cov.total
    lines = [
        f"Class coverage: imbalance ratio **{ratio_text(cov)}** (most / least frequent class); "
        f"rarest class **{cov.rarest_name}**, {cov.rarest_count} of {cov.total} answers "
        f"({share:.2%}).",
        "",
    ]
    if cov.missing:
        lines += [
            f"> **Warning:** the oracle never answered {', '.join(cov.missing)}: the copy "
            "cannot learn these classes.",
            "",
        ]
    if cov.rare:
        lines += [
            f"> **Warning:** {', '.join(cov.rare)} each hold under {cov.rare_share:.0%} of the "
            "answers: the copy learns them poorly.",
            "",
        ]
    return lines
