"""`--subset N`: a fixed subset of a benchmark's prompts that keeps its category mix, for quick comparison runs
(docs/generation.md §6). The first N prompts would not do: GenEval's file is grouped by tag (its first 80 prompts
are all single_object) and MJHQ-30K's order is not spread over its categories.

The same rule picks the prompts at generation and at scoring, so both agree without storing the list; images are
those of a full run for the same prompts (seeds depend on the item id, not its position).
"""
from __future__ import annotations

from collections.abc import Sequence

from sana_eval.generation.prompt_files import Item


def item_category(item: Item) -> str | None:
    """The category the subset keeps the mix of: GenEval's tag, MJHQ-30K's category; None elsewhere."""
    value = item.metadata.get("tag", item.metadata.get("category"))
    return None if value is None else str(value)


def evenly_spaced(indices: Sequence[int], k: int) -> list[int]:
    """k of `indices` spread over the whole list (all of them when k >= len)."""
    if k >= len(indices):
        return list(indices)
    return [indices[(j * len(indices)) // k] for j in range(k)]


def subset_indices(categories: Sequence[str | None], n: int) -> list[int]:
    """Positions (ascending) of the n items kept: each category gets a share of n proportional to its size (largest
    remainder, ties to the category seen first) and its items evenly spaced within it; without categories (all None)
    the items are evenly spaced over the set. n >= the set's size keeps everything."""
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    total = len(categories)
    if n >= total:
        return list(range(total))
    groups: dict[str | None, list[int]] = {}
    for i, category in enumerate(categories):
        groups.setdefault(category, []).append(i)
    exact = {c: n * len(members) / total for c, members in groups.items()}
    quota = {c: int(share) for c, share in exact.items()}
    order = sorted(groups, key=lambda c: -(exact[c] - quota[c]))   # stable: first-seen wins a tie
    for c in order[:n - sum(quota.values())]:
        quota[c] += 1
    return sorted(i for c, members in groups.items() for i in evenly_spaced(members, quota[c]))


def subset_items(items: Sequence[Item], n: int | None) -> list[Item]:
    """`items` reduced to `--subset n` (all of them for None)."""
    if n is None:
        return list(items)
    return [items[i] for i in subset_indices([item_category(it) for it in items], n)]
