"""The synthetic problems of the COMBO paper (Oh et al., NeurIPS 2019, section 4 and appendix) that need
no external data, written from their definitions (which follow Baptista & Poloczek 2018, BOCS, for the
first two). All three are minimised.

- Ising sparsification: a zero-field Ising model on a 4 x 4 grid (24 edges) with interactions
  J_e = s_e * u_e, s_e uniform in {-1, +1}, u_e uniform in [0.05, 5], and p(z) proportional to
  exp(sum_e 2 J_e z_i z_j) over spins z in {-1, +1}^16. A binary x in {0, 1}^24 keeps edge e when
  x_e = 1; the objective is KL(p_J || p_{x*J}) + lambda * |x|_1, computed exactly over all 2^16 spin
  configurations: KL = sum_e 2 (J_e - x_e J_e) E_p[z_i z_j] + log Z(x*J) - log Z(J).
- Contamination control: a food supply chain of 25 stages, 100 Monte Carlo simulations. Contamination
  Z_0 ~ Beta(1, 30) before the first stage; at stage i, without prevention (x_i = 0) the uncontaminated
  fraction is contaminated at rate Lambda_i ~ Beta(1, 17/3), with prevention (x_i = 1, cost 1) the
  contamination falls at rate Gamma_i ~ Beta(1, 3/7):
  Z_i = Lambda_i (1 - x_i)(1 - Z_{i-1}) + (1 - Gamma_i x_i) Z_{i-1}. Objective:
  sum_i x_i - sum_i (P_sim(Z_i < 0.1) - 0.95) + lambda * |x|_1 (the constraint weight rho is 1).
  The reference draws Z_0, Lambda and Gamma from three generators seeded alike; so do we.
- Pest control: 25 stages, at each stage no pesticide (0) or one of 4 pesticides. The pest fraction
  starts at Beta(1, 30); without control it spreads, p <- p + s (1 - p) with s ~ Beta(1, 17/3); with
  pesticide k it falls, p <- (1 - c) p with c ~ Beta(1, b_k), and the pests grow tolerant: b_k rises by
  t_k / 25 after each use, b = (2, 3, 3, 5) / 7, t = (1, 2.5, 2, 0.5) / 7. Pesticide k costs
  price_k (1 - discount_k * (number of stages using k) / 25), price = (1, 0.8, 0.7, 0.5), discount =
  (0.2, 0.3, 0.3, 0). Objective: total cost + sum over stages of P_sim(pest fraction > 0.1), 100
  simulations. The reference draws fresh random numbers at every evaluation (a noisy objective); ours
  draws them from a generator seeded with the instance seed at every evaluation, so it is deterministic.

Variables: binary ones are `Categorical` (0, 1); the pest-control choices are `Categorical` with 5
values: complete graphs, as the COMBO authors intend (their released code used path graphs for them by
mistake, their issue #6).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

import nas

GRID = 4
N_STAGES = 25
N_SIM = 100


def _grid_edges(n: int = GRID) -> list[tuple[int, int]]:
    """Horizontal edges row by row, then vertical edges, between spins numbered row-major."""
    horizontal = [(r * n + c, r * n + c + 1) for r in range(n) for c in range(n - 1)]
    vertical = [(r * n + c, (r + 1) * n + c) for r in range(n - 1) for c in range(n)]
    return horizontal + vertical


def _log_sum_exp(a: np.ndarray) -> float:
    top = float(a.max())
    return top + float(np.log(np.exp(a - top).sum()))


@dataclass
class Ising:
    """Ising sparsification, minimised; instance drawn from `seed`."""

    seed: int = 0
    lam: float = 0.01
    name: str = "ising"
    mode: str = "min"
    variables: list = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.edges = _grid_edges()
        n_edges = len(self.edges)
        self.coupling = rng.choice([-1.0, 1.0], n_edges) * rng.uniform(0.05, 5.0, n_edges)
        spins = np.array(list(itertools.product((-1.0, 1.0), repeat=GRID * GRID)))
        i, j = np.array(self.edges).T
        self.pair = spins[:, i] * spins[:, j]  # (2^16, 24): z_i z_j for every configuration and edge
        energy = 2.0 * self.pair @ self.coupling
        self.log_z = _log_sum_exp(energy)
        p = np.exp(energy - self.log_z)
        self.moments = p @ self.pair  # E_p[z_i z_j]
        self.variables = [nas.Categorical(f"e{k}", (0, 1)) for k in range(n_edges)]

    def value(self, x: np.ndarray) -> float:
        kept = x * self.coupling
        kl = float(2.0 * ((self.coupling - kept) * self.moments).sum()) + _log_sum_exp(2.0 * self.pair @ kept) \
            - self.log_z
        return kl + self.lam * float(x.sum())

    def __call__(self, assignment: dict) -> float:
        return self.value(np.array([assignment[v.name] for v in self.variables], dtype=float))


@dataclass
class Contamination:
    """Contamination control, minimised; instance drawn from `seed`."""

    seed: int = 0
    lam: float = 0.01
    name: str = "contamination"
    mode: str = "min"
    variables: list = field(init=False)

    def __post_init__(self) -> None:
        self.z0 = np.random.RandomState(self.seed).beta(1.0, 30.0, size=N_SIM)
        self.lambdas = np.random.RandomState(self.seed).beta(1.0, 17.0 / 3.0, size=(N_STAGES, N_SIM))
        self.gammas = np.random.RandomState(self.seed).beta(1.0, 3.0 / 7.0, size=(N_STAGES, N_SIM))
        self.variables = [nas.Categorical(f"s{k}", (0, 1)) for k in range(N_STAGES)]

    def value(self, x: np.ndarray) -> float:
        z = self.z0
        below = np.empty(N_STAGES)
        for i in range(N_STAGES):
            z = self.lambdas[i] * (1.0 - x[i]) * (1.0 - z) + (1.0 - self.gammas[i] * x[i]) * z
            below[i] = np.mean(z < 0.1)
        return float(x.sum() - (below - 0.95).sum() + self.lam * x.sum())

    def __call__(self, assignment: dict) -> float:
        return self.value(np.array([assignment[v.name] for v in self.variables], dtype=float))


PEST_BETA = (2.0 / 7.0, 3.0 / 7.0, 3.0 / 7.0, 5.0 / 7.0)
PEST_TOLERANCE = (1.0 / 7.0, 2.5 / 7.0, 2.0 / 7.0, 0.5 / 7.0)
PEST_PRICE = (1.0, 0.8, 0.7, 0.5)
PEST_DISCOUNT = (0.2, 0.3, 0.3, 0.0)


@dataclass
class PestControl:
    """Pest control, minimised; `seed` seeds the simulation's generator at every evaluation."""

    seed: int = 0
    name: str = "pest_control"
    mode: str = "min"
    variables: list = field(init=False)

    def __post_init__(self) -> None:
        self.variables = [nas.Categorical(f"p{k}", (0, 1, 2, 3, 4)) for k in range(N_STAGES)]

    def value(self, x: np.ndarray) -> float:
        rng = np.random.RandomState(self.seed)
        beta = list(PEST_BETA)
        counts = np.bincount(x, minlength=5)
        pest = rng.beta(1.0, 30.0, size=N_SIM)
        cost = 0.0
        for k in x:
            spread = rng.beta(1.0, 17.0 / 3.0, size=N_SIM)
            cost += float(np.mean(pest > 0.1))
            if k > 0:
                control = rng.beta(1.0, beta[k - 1], size=N_SIM)
                pest = (1.0 - control) * pest
                beta[k - 1] += PEST_TOLERANCE[k - 1] / N_STAGES
                cost += PEST_PRICE[k - 1] * (1.0 - PEST_DISCOUNT[k - 1] / N_STAGES * counts[k])
            else:
                pest = pest + spread * (1.0 - pest)
        return cost

    def __call__(self, assignment: dict) -> float:
        return self.value(np.array([assignment[v.name] for v in self.variables], dtype=int))


PROBLEMS = {"ising": Ising, "contamination": Contamination, "pest_control": PestControl}
PAPER_BUDGETS = {"ising": 170, "contamination": 270, "pest_control": 320}
