"""Which staged writes a publish keeps: the non-overlapping complete writes that cover the most seqs.

A replay after a crash can stage a second write over seqs already staged (same range, or regrouped);
keeping a maximum-weight set of non-overlapping writes per split keeps every seq exactly once (see
``staged``).
"""

from __future__ import annotations

import bisect


def best_cover(writes: list[tuple[int, int, int]]) -> list[int]:
    """Write ids of a non-overlapping subset of ``(first, last, write_id)`` that covers the most seqs.

    Weighted interval scheduling: O(n log n). Equal ranges (an exact replay) are interchangeable.
    """
    items = sorted(writes, key=lambda w: (w[1], w[0], w[2]))
    ends = [w[1] for w in items]
    best = [0] * (len(items) + 1)
    take = [False] * len(items)
    prev = [0] * len(items)
    for i, (first, last, _) in enumerate(items):
        prev[i] = bisect.bisect_left(ends, first, 0, i)  # writes ending before ``first``
        with_it = best[prev[i]] + (last - first + 1)
        take[i] = with_it > best[i]
        best[i + 1] = with_it if take[i] else best[i]
    out, i = [], len(items)
    while i > 0:
        if take[i - 1]:
            out.append(items[i - 1][2])
            i = prev[i - 1]
        else:
            i -= 1
    return out
