"""The report's class-coverage section: imbalance, rarest class and the classes under 1% of
the answers, as markdown lines."""

from __future__ import annotations

from collections import Counter

from copycat.steal.coverage import WIDEN_POOL, class_coverage, ratio_text


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
            f"cannot learn these classes. {WIDEN_POOL}.",
            "",
        ]
    if cov.rare:
        lines += [
            f"> **Warning:** {', '.join(cov.rare)} each hold under {cov.rare_share:.0%} of the "
            f"answers: the copy learns them poorly. {WIDEN_POOL}.",
            "",
        ]
    return lines


def source_lines(rows: list[tuple[int, str]], names: list[str], *, top: int = 12) -> list[str]:
    """Markdown table of the answers by pool group (``rows``: label and source of each answer,
    the source being a pool part and the top folder of the image's file, e.g.
    ``clipart/animals``): which groups were sent and what the oracle said of them. Empty when
    the pool has a single group."""
    by: dict[str, Counter[int]] = {}
    for label, source in rows:
        by.setdefault(source, Counter())[label] += 1
    if len(by) < 2:
        return []
    order = sorted(by.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    lines = [
        "Answers by pool group (a pool part and the top folder of each image's file), "
        "largest first:",
        "",
        "| group | answers | classes answered | most frequent label |",
        "|---|--:|--:|---|",
    ]
    for group, counts in order[:top]:
        n = sum(counts.values())
        label, m = counts.most_common(1)[0]
        name = names[label] if 0 <= label < len(names) else str(label)
        safe = group.replace("|", "\\|").replace("`", "'")
        lines.append(f"| `{safe}` | {n:,} | {len(counts)} of {len(names)} | {name} ({m / n:.0%}) |")
    if len(order) > top:
        rest = sum(sum(c.values()) for _, c in order[top:])
        lines.append(f"| {len(order) - top} more groups | {rest:,} | | |")
    return [*lines, ""]
