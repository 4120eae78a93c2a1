"""Acquisition for COMBO: expected improvement averaged over the hyperparameter samples (botorch's
`LogExpectedImprovement` on the ensemble `ComboGP`, so the average is a log-mean-exp of per-sample
log EI), maximised by local search on the product graph.

Neighbours of a point change one variable to one of its graph neighbours: any other value of a
Categorical (complete graph), the value before or after of an Ordinal (path graph). The search is
vectorised over its starting points: each step scores every neighbour of every still-climbing point in
one batch and moves each point to its best neighbour if that is strictly better (steepest ascent).
Starting points: the best observed points plus the best of a random spray (uniform points and the
neighbours of the best observed points) by acquisition value. Every point scored on the way is kept, so
the caller can take the best one that was not evaluated yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from botorch.acquisition.analytic import LogExpectedImprovement

from nas.strategies.combo.gp import ComboGP
from nas.strategies.combo.kernel import GraphSpectrum

AcqFn = Callable[[torch.Tensor], torch.Tensor]


def log_ei(model: ComboGP, best_f: float) -> AcqFn:
    """log of the sample-averaged EI over points (c, d) -> (c,), through botorch."""
    acq = LogExpectedImprovement(model, best_f=torch.tensor(best_f, dtype=torch.float64))

    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return acq(x.to(torch.float64).unsqueeze(-2))

    return score


@dataclass(frozen=True)
class Moves:
    """Every one-variable graph move, as (variable, shift) pairs: categorical shifts 1..n-1 taken modulo n
    (every other value), ordinal shifts -1 and +1 clamped to the domain (a clamped move is a no-op)."""

    var: torch.Tensor
    shift: torch.Tensor
    size: torch.Tensor
    ordinal: torch.Tensor

    @classmethod
    def of(cls, spectrum: GraphSpectrum) -> Moves:
        var, shift = [], []
        for i, (n, o) in enumerate(zip(spectrum.sizes.long().tolist(), spectrum.ordinal, strict=True)):
            if n < 2:
                continue
            steps = (-1, 1) if o else range(1, n)
            var += [i] * len(steps)
            shift += list(steps)
        var_t = torch.tensor(var, dtype=torch.long)
        return cls(var_t, torch.tensor(shift, dtype=torch.long), spectrum.sizes.long()[var_t],
                   torch.tensor(spectrum.ordinal, dtype=torch.bool)[var_t])

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """(a, d) long points -> (a, M, d) their neighbours, one per move."""
        a, m = x.shape[0], self.var.shape[0]
        current = x[:, self.var]  # (a, M)
        moved = torch.where(self.ordinal, (current + self.shift).clamp(min=torch.zeros_like(self.size),
                                                                         max=self.size - 1),
                            (current + self.shift) % self.size)
        out = x.unsqueeze(1).expand(a, m, x.shape[1]).clone()
        out[:, torch.arange(m), self.var] = moved
        return out


def _score_chunks(acq: AcqFn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([acq(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]) if len(x) else torch.empty(0)


def exhaustive(acq: AcqFn, spectrum: GraphSpectrum, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every vertex of the product graph (for spaces small enough to enumerate); returns them (p, d)
    and their values (p,), best first (the first of equals in enumeration order)."""
    grids = [torch.arange(int(n)) for n in spectrum.sizes.long().tolist()]
    points = torch.cartesian_prod(*grids).reshape(-1, spectrum.d)
    values = _score_chunks(acq, points, chunk)
    order = torch.argsort(values, descending=True, stable=True)
    return points[order], values[order]


def local_search(acq: AcqFn, spectrum: GraphSpectrum, best_points: torch.Tensor, n_spray: int, n_starts: int,
                 generator: torch.Generator, max_steps: int = 100, chunk: int = 4096
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise `acq` over the product graph; returns every point scored (p, d) and its value (p,),
    best first, without repeats.

    best_points (k, d): the best observed points, each a starting point whose neighbours join the spray.
    """
    moves = Moves.of(spectrum)
    sizes = spectrum.sizes.long()
    spray = (torch.rand(n_spray, spectrum.d, generator=generator, dtype=torch.float64) * sizes).long()
    spray = torch.minimum(spray, sizes - 1)
    pool = [spray, best_points]
    if len(best_points) and len(moves.var):
        pool.append(moves.neighbours(best_points).reshape(-1, spectrum.d))
    pool_x = torch.unique(torch.cat(pool), dim=0)
    pool_v = _score_chunks(acq, pool_x, chunk)
    seen_x, seen_v = [pool_x], [pool_v]

    n_spray_starts = max(n_starts - len(best_points), 0)
    order = torch.argsort(pool_v, descending=True)[:n_spray_starts]
    current = torch.unique(torch.cat([best_points, pool_x[order]]), dim=0)
    current_v = _score_chunks(acq, current, chunk)
    for _ in range(max_steps):
        if not len(current) or not len(moves.var):
            break
        nb = moves.neighbours(current)  # (a, M, d)
        nb_v = _score_chunks(acq, nb.reshape(-1, spectrum.d), chunk).reshape(nb.shape[:2])
        seen_x.append(nb.reshape(-1, spectrum.d))
        seen_v.append(nb_v.reshape(-1))
        best_v, best_j = nb_v.max(dim=1)
        improved = best_v > current_v
        current, keep = torch.unique(nb[torch.arange(len(current)), best_j][improved], dim=0, return_inverse=True)
        current_v = torch.empty(len(current), dtype=best_v.dtype).scatter_(0, keep, best_v[improved])

    all_x, all_v = torch.cat(seen_x), torch.cat(seen_v)
    order = torch.argsort(all_v, descending=True, stable=True)
    all_x, all_v = all_x[order], all_v[order]
    uniq, inverse = torch.unique(all_x, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(all_x), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(all_x)), reduce="amin")
    keep = torch.sort(first).values
    return all_x[keep], all_v[keep]
