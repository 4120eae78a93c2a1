"""Time of one COMBO suggestion (MCMC: 10 slice-sampling sweeps continuing the chain, then EI averaged
over the 10 samples, maximised by local search from 5000 random points + 20 starts) on 25-variable
problems, ours against the same step done naively, in one run.

- ours: `nas.strategies.combo` (eigenpairs computed once; kernel as exp(onehot @ blockdiag(log G) @
  onehot^T); mean / signal / noise updates on one eigendecomposition; a beta_i update swaps one factor's
  log into the kept sum of the others; acquisition from cached Cholesky factors of all samples at once).
- naive: the same algorithm, same sampler, same search, but every kernel matrix computed from scratch:
  each variable's Laplacian eigendecomposed again and its factor built over all pairs from its
  eigenbasis, then multiplied; every density evaluation of the sampler factorises a freshly built
  kernel; every acquisition call rebuilds each sample's training kernel and its Cholesky factor.
- dense product graph: expm of the Laplacian of the product graph itself, for d binary variables (2^d
  vertices); at d = 25 it has 33,554,432 vertices, out of reach, so only its growth with d is shown.

Problems: contamination control (25 binary variables) and pest control (25 variables x 5 values) from
benchmarks/combo_problems.py, observations at uniform random points. Before each timed suggestion the
chain is burnt in with 5 sweeps (the strategy's first suggestion does 99; burn-in is not part of the
per-suggestion time). One torch thread.

    python benchmarks/combo_speed.py | tee results/combo_speed.txt
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from combo_problems import Contamination, PestControl  # noqa: E402

from nas.space import as_space  # noqa: E402
from nas.strategies import make_strategy  # noqa: E402
from nas.strategies.combo.acquisition import local_search, log_ei  # noqa: E402
from nas.strategies.combo.gp import JITTER, ComboGP, GPData, HyperPosterior, initial_theta  # noqa: E402
from nas.strategies.combo.kernel import GraphSpectrum, laplacian, log_gram  # noqa: E402
from nas.strategies.combo.slice_sampling import slice_sample  # noqa: E402

N_SAMPLES, N_SPRAY, N_STARTS = 10, 5000, 20
REFERENCE = {"contamination": "12-17 s per suggestion for n = 20..100",
             "pest_control": "20-25 s per suggestion"}


# -- the naive way -----------------------------------------------------------------------------------

def naive_kernel(x1: torch.Tensor, x2: torch.Tensor, theta: list[float], sizes: list[int],
                 ordinal: list[bool]) -> torch.Tensor:
    """s2 * prod_i G_i[x1_i, x2_i], each variable's eigendecomposition and pairwise factor from scratch."""
    out = torch.full((x1.shape[0], x2.shape[0]), math.exp(theta[1]), dtype=torch.float64)
    for i, (n, o) in enumerate(zip(sizes, ordinal, strict=True)):
        lam, u = torch.linalg.eigh(torch.tensor(laplacian(n, o), dtype=torch.float64))
        w = torch.exp(-math.exp(theta[3 + i]) * lam.clamp_min(0.0))
        a, b = u[x1[:, i].long()], u[x2[:, i].long()]
        out = out * ((a * w) @ b.T / w.mean())
    return out


def naive_diag(x: torch.Tensor, theta: list[float], sizes: list[int], ordinal: list[bool]) -> torch.Tensor:
    """k(x, x) for every row of x, from scratch like `naive_kernel`."""
    out = torch.full((x.shape[0],), math.exp(theta[1]), dtype=torch.float64)
    for i, (n, o) in enumerate(zip(sizes, ordinal, strict=True)):
        lam, u = torch.linalg.eigh(torch.tensor(laplacian(n, o), dtype=torch.float64))
        w = torch.exp(-math.exp(theta[3 + i]) * lam.clamp_min(0.0))
        a = u[x[:, i].long()]
        out = out * ((a * a * w).sum(1) / w.mean())
    return out


class NaivePosterior(HyperPosterior):
    """The same posterior; every density evaluation rebuilds the kernel matrix from scratch."""

    def __init__(self, spectrum, data, sizes, ordinal):
        super().__init__(spectrum, data)
        self.sizes, self.ordinal = sizes, ordinal

    def density(self, theta: list[float]) -> float:
        prior = float(self.log_prior(torch.tensor(theta, dtype=torch.float64)))
        if prior == -math.inf:
            return prior
        k = naive_kernel(self.data.x, self.data.x, theta, self.sizes, self.ordinal)
        k = k + (math.exp(theta[2]) + JITTER) * self._eye
        return prior + float(self._log_likelihood(k, self.data.y - theta[0]))

    def sweep(self, theta: list[float], rng: random.Random) -> list[float]:
        """Mean, signal, noise, then the betas in shuffled order: the order (and random draws) of ours."""
        theta = list(theta)
        for j in (0, 1, 2):
            theta[j] = self._update(theta, j, rng)
        betas = list(range(3, len(theta)))
        rng.shuffle(betas)
        for j in betas:
            theta[j] = self._update(theta, j, rng)
        return theta

    def _update(self, theta: list[float], j: int, rng: random.Random) -> float:
        return slice_sample(lambda v: self.density(theta[:j] + [v] + theta[j + 1:]), theta[j], rng)[0]


def naive_log_ei(x_train, y, thetas, best_f, sizes, ordinal):
    def score(x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        per_sample = []
        for theta in thetas:
            k = naive_kernel(x_train, x_train, theta, sizes, ordinal)
            k = k + (math.exp(theta[2]) + JITTER) * torch.eye(len(k), dtype=torch.float64)
            chol = torch.linalg.cholesky(k)
            kxn = naive_kernel(x, x_train, theta, sizes, ordinal)
            alpha = torch.cholesky_solve((y - theta[0]).unsqueeze(-1), chol).squeeze(-1)
            mean = theta[0] + kxn @ alpha
            v = torch.linalg.solve_triangular(chol, kxn.T, upper=False)
            var = (naive_diag(x, theta, sizes, ordinal) - (v * v).sum(0)).clamp_min(1e-12)
            sd = var.sqrt()
            u = (mean - best_f) / sd
            normal = torch.distributions.Normal(0.0, 1.0)
            ei = sd * (u * normal.cdf(u) + normal.log_prob(u).exp())
            per_sample.append(ei)
        return torch.stack(per_sample).mean(0).clamp_min(1e-300).log()
    return score


# -- one suggestion each way -------------------------------------------------------------------------

def observations(problem, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    xs = np.stack([rng.integers(0, len(v), n) for v in problem.variables], axis=1)
    values = np.array([problem.value(x.astype(float) if problem.name != "pest_control" else x) for x in xs])
    scores = -values  # minimised problems: the strategy maximises -value
    y = (scores - scores.mean()) / scores.std(ddof=1)
    return torch.tensor(xs, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)


def ours_step(spectrum, x, y, chain, seed) -> tuple[float, float, list]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    post = HyperPosterior(spectrum, GPData(x, y))
    thetas = post.sample(chain, N_SAMPLES, rng)
    t1 = time.perf_counter()
    th = torch.tensor(thetas, dtype=torch.float64)
    model = ComboGP(spectrum, x, y.expand(len(th), -1), th)
    best = x[torch.argsort(y, descending=True)[:5]].long()
    local_search(log_ei(model, float(y.max())), spectrum, best, N_SPRAY, N_STARTS, torch.Generator().manual_seed(seed))
    return t1 - t0, time.perf_counter() - t1, thetas


def naive_step(spectrum, x, y, chain, seed, sizes, ordinal) -> tuple[float, float, list]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    post = NaivePosterior(spectrum, GPData(x, y), sizes, ordinal)
    thetas = post.sample(chain, N_SAMPLES, rng)
    t1 = time.perf_counter()
    best = x[torch.argsort(y, descending=True)[:5]].long()
    acq = naive_log_ei(x, y, thetas, float(y.max()), sizes, ordinal)
    local_search(acq, spectrum, best, N_SPRAY, N_STARTS, torch.Generator().manual_seed(seed))
    return t1 - t0, time.perf_counter() - t1, thetas


def strategy_ask(problem, n: int, fit: str) -> float:
    """Wall time of `Combo.ask()` itself with n observations (after a first, untimed ask)."""
    space = as_space(problem.variables)
    s = make_strategy("combo", space, seed=0, mode="min", fit=fit, n_burn=5, n_initial=2)
    rng = np.random.default_rng(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n - 1):
            a = {v.name: v.values[int(rng.integers(len(v)))] for v in problem.variables}
            s.tell(a, problem(a))
        a = s.ask()
        s.tell(a, problem(a))
        t = time.perf_counter()
        s.ask()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,100,250,500")
    parser.add_argument("--naive-sizes", default="contamination=50,100,250,500;pest_control=50,100,250")
    parser.add_argument("--product-graph-max-d", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes_n = [int(v) for v in args.sizes.split(",")]
    naive_n = {}
    for item in args.naive_sizes.split(";"):
        name, values = item.split("=")
        naive_n[name] = [int(v) for v in values.split(",")]

    print("COMBO speed: one suggestion (10 MCMC sweeps + EI over 10 samples, local search from 5000 random "
          "points and 20 starts), ours vs naive")
    print(f"python {platform.python_version()}, torch {torch.__version__}, 1 thread, {platform.machine()}, "
          "2 cores shared with other work (timings are single measurements)\n")
    warm = Contamination(seed=0)  # first calls pay one-off costs (imports, allocator): not timed
    wx, wy = observations(warm, 30, seed=0)
    ours_step(GraphSpectrum.of_space(as_space(warm.variables)), wx, wy, initial_theta(25), seed=0)
    for problem in (Contamination(seed=0), PestControl(seed=0)):
        space = as_space(problem.variables)
        spectrum = GraphSpectrum.of_space(space)
        var_sizes = [len(v) for v in problem.variables]
        ordinal = list(spectrum.ordinal)
        print(f"{problem.name}: 25 variables x {var_sizes[0]} values (reference on this machine kind, from "
              f"combo.md: {REFERENCE[problem.name]})")
        print(f"  {'n':>4s} {'ours: MCMC':>11s} {'+ acq':>7s} {'= total':>8s} {'naive: MCMC':>12s} {'+ acq':>8s} "
              f"{'= total':>8s} {'naive/ours':>10s} {'ask() mcmc':>10s} {'ask() map':>10s}")
        agreement = same = 0.0
        for n in sizes_n:
            x, y = observations(problem, n, seed=n)
            post = HyperPosterior(spectrum, GPData(x, y))
            chain = post.sample(post.feasible(initial_theta(spectrum.d)), 5, random.Random(0))[-1]
            naive = NaivePosterior(spectrum, GPData(x, y), var_sizes, ordinal)
            check = abs(naive.density(chain) - float(post.log_posterior(torch.tensor(chain))))
            assert check < 1e-4 * max(1.0, abs(naive.density(chain))), f"naive and ours disagree by {check}"
            agreement = max(agreement, check)
            o_mcmc, o_acq, o_thetas = ours_step(spectrum, x, y, chain, seed=1)
            row = f"  {n:4d} {o_mcmc:10.2f}s {o_acq:6.2f}s {o_mcmc + o_acq:7.2f}s"
            if n in naive_n.get(problem.name, []):
                n_mcmc, n_acq, n_thetas = naive_step(spectrum, x, y, chain, 1, var_sizes, ordinal)
                same = max(same, float(np.abs(np.array(o_thetas) - np.array(n_thetas)).max()))
                ratio = (n_mcmc + n_acq) / (o_mcmc + o_acq)
                row += f" {n_mcmc:11.2f}s {n_acq:7.2f}s {n_mcmc + n_acq:7.2f}s {ratio:9.1f}x"
            else:
                row += f" {'-':>12s} {'-':>8s} {'-':>8s} {'-':>10s}"
            row += f" {strategy_ask(problem, n, 'mcmc'):9.2f}s {strategy_ask(problem, n, 'map'):9.2f}s"
            print(row, flush=True)
        print(f"  (log posterior at the chain's state, naive vs ours: largest difference {agreement:.1e}; the 10 "
              f"hyperparameter samples, naive vs ours from the same seed: largest difference {same:.1e})\n")

    print("kernel of all vertices of the product of d binary variables (2^d points): expm of the product graph's "
          "Laplacian vs ours (per-variable eigenpairs)")
    print(f"  {'d':>3s} {'vertices':>9s} {'expm(product)':>14s} {'ours':>9s} {'max |diff|':>11s}")
    for d in range(4, args.product_graph_max_d + 1):
        betas = np.exp(np.linspace(-1.0, 1.0, d))
        lap = np.zeros((2 ** d, 2 ** d))
        for i in range(d):
            mats = [np.eye(2)] * d
            mats[i] = laplacian(2, False)
            term = mats[0]
            for m in mats[1:]:
                term = np.kron(term, m)
            lap += betas[i] * term
        t = time.perf_counter()
        dense = scipy.linalg.expm(-lap) / np.prod([np.mean(np.exp(-b * np.array([0.0, 2.0]))) for b in betas])
        t_dense = time.perf_counter() - t
        spec = GraphSpectrum.of_domains([2] * d, [False] * d)
        pts = torch.tensor(np.array(np.unravel_index(np.arange(2 ** d), (2,) * d)).T, dtype=torch.float64)
        t = time.perf_counter()
        ours = log_gram(spec, spec.log_factors(torch.tensor(np.log(betas))), pts, pts).exp()
        t_ours = time.perf_counter() - t
        print(f"  {d:3d} {2 ** d:9d} {t_dense:13.3f}s {t_ours:8.4f}s {np.abs(ours.numpy() - dense).max():11.2e}",
              flush=True)


if __name__ == "__main__":
    main()
