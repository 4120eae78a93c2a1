"""Pareto fronts of objective vectors, through botorch's multi-objective utilities (non-dominated sorting
and exact hypervolume), so the project does not keep its own copies of them.

Every function takes plain lists of vectors that are *maximised* in every coordinate (`signed` turns
values with their directions into that form), and returns plain Python values. torch and botorch are
imported inside the functions: a strategy that never meets two objectives never loads them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Vector = Sequence[float]


def signed(values: Vector, modes: Sequence[str]) -> list[float]:
    """`values` with every minimised coordinate negated, so that larger is better everywhere."""
    return [float(v) if m == "max" else -float(v) for v, m in zip(values, modes, strict=True)]


def _tensor(points: Sequence[Vector]):
    import torch

    return torch.tensor([list(map(float, p)) for p in points], dtype=torch.float64)


def non_dominated(points: Sequence[Vector]) -> list[bool]:
    """Which points no other point dominates (maximisation; equal points are all kept)."""
    if not points:
        return []
    from botorch.utils.multi_objective.pareto import is_non_dominated

    return [bool(v) for v in is_non_dominated(_tensor(points), deduplicate=False)]


def pareto_ranks(points: Sequence[Vector]) -> list[int]:
    """NSGA-II's non-dominated sorting: rank 0 is the front, rank 1 the front of the rest, and so on."""
    ranks = [-1] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        mask = non_dominated([points[i] for i in left])
        for i, keep in zip(left, mask, strict=True):
            if keep:
                ranks[i] = rank
        left = [i for i, keep in zip(left, mask, strict=True) if not keep]
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Vector], ranks: Sequence[int]) -> list[float]:
    """NSGA-II's crowding distance of each point within its rank: per objective, the gap between its two
    neighbours divided by that front's range, summed; the extremes of each objective get infinity."""
    out = [0.0] * len(points)
    fronts: dict[int, list[int]] = {}
    for i, r in enumerate(ranks):
        fronts.setdefault(r, []).append(i)
    m = len(points[0]) if points else 0
    for members in fronts.values():
        if len(members) <= 2:
            for i in members:
                out[i] = math.inf
            continue
        for k in range(m):
            order = sorted(members, key=lambda i, k=k: points[i][k])
            lo, hi = points[order[0]][k], points[order[-1]][k]
            out[order[0]] = out[order[-1]] = math.inf
            if hi == lo:
                continue
            for j in range(1, len(order) - 1):
                out[order[j]] += (points[order[j + 1]][k] - points[order[j - 1]][k]) / (hi - lo)
    return out


def hypervolume(points: Sequence[Vector], reference: Vector) -> float:
    """The volume dominated by `points` and dominating `reference` (maximisation); points that do not
    strictly dominate the reference add nothing. Exact, by botorch's `Hypervolume`."""
    ref = [float(r) for r in reference]
    inside = [list(map(float, p)) for p in points if all(float(v) > r for v, r in zip(p, ref, strict=True))]
    if not inside:
        return 0.0
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    front = [p for p, keep in zip(inside, non_dominated(inside), strict=True) if keep]
    import torch

    return float(Hypervolume(torch.tensor(ref, dtype=torch.float64)).compute(_tensor(front)))


__all__ = ["crowding_distances", "hypervolume", "non_dominated", "pareto_ranks", "signed"]
