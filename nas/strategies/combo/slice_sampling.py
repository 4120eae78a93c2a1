"""Univariate slice sampling with the doubling procedure (Neal 2003, "Slice sampling", Annals of
Statistics 31(3), figures 4 to 6): an interval of width `width` placed at random around x0 is doubled
(one side at a time, chosen at random) until both ends lie outside the slice or `max_doublings` is
reached; then points are drawn uniformly from it, shrinking it towards x0 on each rejection, and a
point is accepted only if the doubling procedure started from it could have produced the same interval
(Neal's acceptance test, which keeps the chain reversible). Log densities may return -inf (outside the
support); the starting point must have a finite log density.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable


def slice_sample(logp: Callable[[float], float], x0: float, rng: random.Random, width: float = 1.0,
                 max_doublings: int = 10, logp0: float | None = None,
                 max_shrinks: int = 200) -> tuple[float, float]:
    """One slice-sampling update of x0 for the density exp(logp): returns (x1, logp(x1)).

    `logp0` is logp(x0) when the caller already knows it. If `max_shrinks` proposals are all rejected
    (a density too narrow for the interval's resolution), x0 is returned unchanged.
    """
    cache: dict[float, float] = {}

    def f(x: float) -> float:
        if x not in cache:
            cache[x] = float(logp(x))
        return cache[x]

    f0 = f(x0) if logp0 is None else float(logp0)
    cache[x0] = f0
    if not math.isfinite(f0):
        raise ValueError(f"slice_sample: the starting point {x0!r} has log density {f0}")
    level = f0 - rng.expovariate(1.0)  # log(u * p(x0)), u ~ U(0, 1)

    left = x0 - width * rng.random()
    right = left + width
    f_left, f_right = f(left), f(right)
    for _ in range(max_doublings):
        if f_left <= level and f_right <= level:
            break
        if rng.random() < 0.5:
            left -= right - left
            f_left = f(left)
        else:
            right += right - left
            f_right = f(right)

    lo, hi = left, right
    for _ in range(max_shrinks):
        x1 = lo + rng.random() * (hi - lo)
        f1 = f(x1)
        if f1 > level and _accept(f, x0, x1, level, width, left, right):
            return x1, f1
        if x1 < x0:
            lo = x1
        else:
            hi = x1
    return x0, f0


def _accept(f: Callable[[float], float], x0: float, x1: float, level: float, width: float,
            left: float, right: float) -> bool:
    """Neal's test: would doubling from x1 have stopped before reaching this interval?"""
    differ = False
    while right - left > 1.1 * width:
        mid = 0.5 * (left + right)
        if (x0 < mid) != (x1 < mid):
            differ = True
        if x1 < mid:
            right = mid
        else:
            left = mid
        if differ and level >= f(left) and level >= f(right):
            return False
    return True
