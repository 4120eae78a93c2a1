"""COMBO (Oh, Tomczak, Gavves & Welling, NeurIPS 2019, "Combinatorial Bayesian Optimization using the
Graph Cartesian Product") as an asynchronous ask/tell strategy.

- The first ``n_initial`` asks are uniform random assignments without repeats (as random search).
- Then each ask fits a GP with the ARD diffusion kernel on the product of the variables' graphs
  (`kernel.py`) to the successful observations, with standardised (or ``warp``-ed) scores, and proposes
  the maximiser of expected improvement found by local search on the product graph (`acquisition.py`),
  or over every assignment of a space with at most ``n_exhaustive`` of them.
- ``fit="mcmc"`` (default, as the paper): hyperparameter samples by slice sampling (`gp.py`), 99 burn-in
  sweeps before the first suggestion, then ``n_samples`` sweeps per suggestion continuing the chain; EI
  is averaged over those samples. ``fit="map"``: one maximum of the log posterior (warm-started from the
  previous one), cheaper.
- Asks while earlier asks are pending: Kriging believer, each pending point is fantasised at the
  posterior mean (per hyperparameter sample) before the acquisition is maximised, so the batch spreads
  out. Hyperparameters are refitted only when a new result arrived; further asks reuse the samples.
- Several objectives (``mode`` a list of directions): ParEGO (Knowles 2006). Each suggestion draws a
  weight vector uniformly from the simplex and models the augmented Chebyshev scalarisation of the
  objectives (each normalised to [0, 1] over the observations; botorch's `get_chebyshev_scalarization`)
  with the GP, so successive suggestions aim at different parts of the front. The hyperparameters are
  refitted (the MCMC chain continued) at every suggestion, since each has its own scalarised objective.
  ``mo_acquisition="ehvi"`` instead fits one GP per objective (each its own chain or MAP fit) and
  maximises botorch's analytic expected hypervolume improvement over them (`multi.py`).
- Failed evaluations (None or NaN) are left out of the GP, with a warning, and never proposed again.
  A constant objective (zero variance) gives a warning and a flat GP (suggestions then follow its
  uncertainty). An ask never proposes an evaluated or pending assignment while an unseen one exists;
  when the search finds none it falls back to a random unseen one, and on an exhausted space it warns
  that it repeats one.

Seeded: the slice sampler and the random draws use ``self.rng``; the acquisition search uses a torch
Generator seeded from ``self.rng`` at each ask. The state (observations, pending asks, the chain and the
current samples) round-trips through JSON, so a restored search proposes what the original would have.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from nas.space import Assignment, SearchSpace
from nas.strategies.base import Strategy
from nas.strategies.combo.acquisition import exhaustive, local_search, log_ei
from nas.strategies.combo.gp import ComboGP, GPData, HyperPosterior, initial_theta
from nas.strategies.combo.kernel import GraphSpectrum
from nas.strategies.random_search import Key, assignment_key, key_assignment, sample_unseen

FITS = ("mcmc", "map")
INCUMBENTS = ("observed", "mean")
WARPS = ("none", "yeo-johnson")
MO_ACQUISITIONS = ("parego", "ehvi")
# options added after states were first saved: a state without them was made with these values
ADDED_OPTIONS = {"n_exhaustive": 0, "incumbent": "observed", "warp": "none", "mo_acquisition": "parego"}


def _yeo_johnson(values):
    """Yeo-Johnson power transform fitted by maximum likelihood, then standardised (scikit-learn's)."""
    from sklearn.preprocessing import PowerTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return PowerTransformer(method="yeo-johnson").fit_transform(values.reshape(-1, 1)).reshape(-1)


class ComboWarning(UserWarning):
    """Something COMBO worked around: failed evaluations, a constant objective, no unseen point left."""


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"combo: option {name} must be an integer >= {low}, got {value!r}")
    return value


@contextlib.contextmanager
def _threads(n: int | None):
    """Limit torch and BLAS to n threads inside the block (None: leave them). Small dense algebra on a
    shared machine is many times slower with more threads than free cores."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - scikit-learn brings it
            yield
        else:
            with threadpool_limits(limits=n):
                yield
    finally:
        torch.set_num_threads(before)


class Combo(Strategy):
    """COMBO; see the module docstring.

    Options: ``n_initial`` random asks first (default 20, >= 1); ``fit`` "mcmc" | "map"; ``n_samples``
    hyperparameter samples per suggestion with MCMC (default 10); ``n_burn`` burn-in sweeps (default 99);
    ``n_spray`` random points scored to pick starting points (default 5000; the reference uses 20,000);
    ``n_starts`` local-search starting points (default 20, as the reference); ``n_exhaustive``: spaces of at
    most this many assignments have EI maximised over every assignment instead of by local search (default
    0, off); ``incumbent``: EI's reference value, "observed" (the best observed value, as the paper) or
    "mean" (the best posterior mean at an observed point, for noisy objectives); ``warp``: "none" (scores
    standardised, as the paper) or "yeo-johnson" (power-transformed by maximum likelihood, so that a few
    collapsed candidates do not squash the differences among the good ones); ``num_threads`` torch/BLAS
    threads while asking (default 1; None leaves the process's setting).
    """

    name = "combo"

    def __init__(self, space: SearchSpace, seed: int = 0, mode: str | Sequence[str] = "max", n_initial: int = 20,
                 fit: str = "mcmc", n_samples: int = 10, n_burn: int = 99, n_spray: int = 5000,
                 n_starts: int = 20, n_exhaustive: int = 0, incumbent: str = "observed", warp: str = "none",
                 mo_acquisition: str = "parego", num_threads: int | None = 1):
        """Options (each checked here; a bad one raises `ValueError` naming it):
            n_initial: uniform random asks before the first GP suggestion (an int >= 1)
            fit: GP hyperparameters by slice sampling ("mcmc", the paper's) or one posterior maximum ("map")
            n_samples: hyperparameter samples per suggestion with MCMC (an int >= 1)
            n_burn: MCMC burn-in sweeps before the first suggestion (an int >= 0)
            n_spray: random points scored to pick the local searches' starts (an int >= 0)
            n_starts: local-search starting points (an int >= 1)
            n_exhaustive: spaces of at most this many assignments maximise EI over all of them (0: off)
            incumbent: EI's reference, the best observed value ("observed") or best posterior mean ("mean")
            warp: scores standardised ("none", the paper's) or Yeo-Johnson power-transformed ("yeo-johnson")
            mo_acquisition: several objectives: "parego" (a random Chebyshev scalarisation per suggestion)
                or "ehvi" (expected hypervolume improvement over one GP per objective)
            num_threads: torch / BLAS threads while asking (an int >= 1; null: the process's setting)
        """
        super().__init__(space, seed=seed, mode=mode)
        self.n_initial = _check_int("n_initial", n_initial, 1)
        if fit not in FITS:
            raise ValueError(f"combo: option fit must be one of {FITS}, got {fit!r}")
        self.fit = fit
        self.n_samples = _check_int("n_samples", n_samples, 1)
        self.n_burn = _check_int("n_burn", n_burn, 0)
        self.n_spray = _check_int("n_spray", n_spray, 0)
        self.n_starts = _check_int("n_starts", n_starts, 1)
        self.n_exhaustive = _check_int("n_exhaustive", n_exhaustive, 0)
        if incumbent not in INCUMBENTS:
            raise ValueError(f"combo: option incumbent must be one of {INCUMBENTS}, got {incumbent!r}")
        self.incumbent = incumbent
        if warp not in WARPS:
            raise ValueError(f"combo: option warp must be one of {WARPS}, got {warp!r}")
        self.warp = warp
        if mo_acquisition not in MO_ACQUISITIONS:
            raise ValueError(f"combo: option mo_acquisition must be one of {MO_ACQUISITIONS}, got {mo_acquisition!r}")
        self.mo_acquisition = mo_acquisition
        if num_threads is not None:
            _check_int("num_threads", num_threads, 1)
        self.num_threads = num_threads
        self.spectrum = GraphSpectrum.of_space(space)
        self.observations: list[tuple[Key, float | None]] = []  # in tell order; value as told, None if failed
        self.chain: list[float] | None = None  # the MCMC chain's current state / the last MAP fit
        self.samples: list[list[float]] = []  # hyperparameter samples of the last fit
        self.samples_for: int | None = None  # n_told when they were made
        self.burned_in = False
        self.mo_chains: list[list[float] | None] = [None] * self.n_objectives  # ehvi: each objective's chain
        self._warned_successes: int | None = None

    @property
    def options(self) -> dict[str, Any]:
        return {"n_initial": self.n_initial, "fit": self.fit, "n_samples": self.n_samples, "n_burn": self.n_burn,
                "n_spray": self.n_spray, "n_starts": self.n_starts, "n_exhaustive": self.n_exhaustive,
                "incumbent": self.incumbent, "warp": self.warp, "mo_acquisition": self.mo_acquisition}

    # -- ask ----------------------------------------------------------------------------------------
    def propose(self) -> Assignment:
        taken = self.taken()
        ok = self._successes()
        if len(self.observations) + len(self.pending) < self.n_initial or len(ok) < 2:
            if len(self.observations) >= self.n_initial and len(ok) < 2 and self._warned_successes != len(ok):
                self._warned_successes = len(ok)  # once per count, not at every ask of a run of failures
                warnings.warn(f"combo: only {len(ok)} successful evaluation(s) so far; proposing random "
                              "assignments until there are two", ComboWarning, stacklevel=2)
            a = self._random(taken)
        else:
            with _threads(self.num_threads):
                a = self._suggest(ok, taken)
        return a

    def _successes(self) -> list[tuple[Key, float]]:
        out = []
        for k, v in self.observations:
            s = self.score(v)
            if s is not None:
                out.append((k, s))
        return out

    def _random(self, taken: set[Key]) -> Assignment:
        a = sample_unseen(self.space, self.rng, taken)
        if assignment_key(self.space, a) in taken:
            why = (f"every one of the space's {self.space.size()} assignments is evaluated or pending"
                   if len(taken) >= self.space.size() else "random draws found no unseen assignment")
            warnings.warn(f"combo: {why}; proposing a repeat", ComboWarning, stacklevel=3)
        return a

    def _suggest(self, ok: list[tuple[Key, Any]], taken: set[Key]) -> Assignment:
        x = torch.tensor([k for k, _ in ok], dtype=torch.float64)
        scores = torch.tensor([s for _, s in ok], dtype=torch.float64)
        if self.multi_objective and self.mo_acquisition == "ehvi":
            return self._suggest_ehvi(x, scores, taken)
        if self.multi_objective:
            scores = self._parego(scores)
        spread = float(scores.std())
        if not spread > 1e-12 * max(1.0, float(scores.abs().max())):
            warnings.warn(f"combo: all {len(ok)} successful values are equal (zero variance); the GP sees a flat "
                          "objective and suggestions follow its uncertainty only", ComboWarning, stacklevel=3)
            y = torch.zeros_like(scores)
        elif self.warp == "yeo-johnson":  # skewed values (a few collapsed candidates) made closer to normal
            y = torch.from_numpy(_yeo_johnson(scores.numpy()))
        else:
            y = (scores - scores.mean()) / spread
        generator = torch.Generator().manual_seed(self.rng.getrandbits(63))

        thetas = torch.tensor(self._hyper_samples(GPData(x, y)), dtype=torch.float64)
        s = len(thetas)
        model = ComboGP(self.spectrum, x, y.expand(s, -1), thetas)
        if self.pending:  # Kriging believer: pending points at the posterior mean of each sample
            xp = torch.tensor(self.pending, dtype=torch.float64)
            fantasy, _ = model.marginals(xp)
            model = ComboGP(self.spectrum, torch.cat([x, xp]), torch.cat([y.expand(s, -1), fantasy], dim=1), thetas)

        if self.incumbent == "mean":  # the best posterior mean among the observed points (noise-robust)
            best_f = float(model.marginals(x)[0].mean(0).max())
        else:
            best_f = float(y.max())
        acq = log_ei(model, best_f)
        if self.space.size() <= self.n_exhaustive:
            points, _ = exhaustive(acq, self.spectrum)
        else:
            n_best = min(len(ok), max(1, self.n_starts // 4))
            best = x[torch.argsort(y, descending=True, stable=True)[:n_best]].long()
            points, _ = local_search(acq, self.spectrum, best, self.n_spray, self.n_starts, generator)
        for row in points.tolist():
            if tuple(row) not in taken:
                return key_assignment(self.space, tuple(row))
        warnings.warn("combo: every point the acquisition search reached is evaluated or pending; proposing a "
                      "random unseen assignment", ComboWarning, stacklevel=3)
        return self._random(taken)

    def _standardised(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores as the GP sees them: warped or standardised (zeros where they are all equal)."""
        spread = float(scores.std())
        if not spread > 1e-12 * max(1.0, float(scores.abs().max())):
            return torch.zeros_like(scores)
        if self.warp == "yeo-johnson":
            return torch.from_numpy(_yeo_johnson(scores.numpy()))
        return (scores - scores.mean()) / spread

    def _suggest_ehvi(self, x: torch.Tensor, scores: torch.Tensor, taken: set[Key]) -> Assignment:
        """One GP per objective (its own chain / MAP fit), the maximiser of EHVI over them (`multi.py`);
        pending points fantasised at each GP's posterior mean (Kriging believer)."""
        from nas.pareto import non_dominated
        from nas.strategies.combo.multi import ehvi

        generator = torch.Generator().manual_seed(self.rng.getrandbits(63))
        ys = torch.stack([self._standardised(scores[:, k]) for k in range(scores.shape[1])], dim=1)
        models, fantasies = [], []
        xp = torch.tensor(self.pending, dtype=torch.float64) if self.pending else None
        for k in range(ys.shape[1]):
            thetas = torch.tensor(self._objective_samples(k, GPData(x, ys[:, k])), dtype=torch.float64)
            n = len(thetas)
            model = ComboGP(self.spectrum, x, ys[:, k].expand(n, -1), thetas)
            if xp is not None:
                fantasy, _ = model.marginals(xp)
                model = ComboGP(self.spectrum, torch.cat([x, xp]), torch.cat([ys[:, k].expand(n, -1), fantasy], 1),
                                thetas)
                fantasies.append(fantasy.mean(0))
            models.append(model)
        y_all = ys if xp is None else torch.cat([ys, torch.stack(fantasies, dim=1)])
        self.burned_in = True
        acq = ehvi(models, y_all)
        if self.space.size() <= self.n_exhaustive:
            points, _ = exhaustive(acq, self.spectrum)
        else:
            front = [i for i, keep in enumerate(non_dominated(ys.tolist())) if keep]
            best = x[front[:max(1, self.n_starts // 4)]].long()
            points, _ = local_search(acq, self.spectrum, best, self.n_spray, self.n_starts, generator)
        for row in points.tolist():
            if tuple(row) not in taken:
                return key_assignment(self.space, tuple(row))
        warnings.warn("combo: every point the acquisition search reached is evaluated or pending; proposing a "
                      "random unseen assignment", ComboWarning, stacklevel=3)
        return self._random(taken)

    def _objective_samples(self, k: int, data: GPData) -> list[list[float]]:
        """Hyperparameter samples of objective k's GP: its chain continued (burn-in at the first fit), or a
        MAP fit warm-started from the last one."""
        post = HyperPosterior(self.spectrum, data)
        d = self.spectrum.d
        chain = self.mo_chains[k]
        start = post.feasible(chain if chain is not None else initial_theta(d))
        if self.fit == "map":
            starts = [start] if chain is None else [start, post.feasible(initial_theta(d))]
            samples = [post.fit_map(starts)]
        else:
            if not self.burned_in and self.n_burn:
                start = post.sample(start, self.n_burn, self.rng)[-1]
            samples = post.sample(start, self.n_samples, self.rng)
        self.mo_chains[k] = list(samples[-1])
        return samples

    def _parego(self, scores: torch.Tensor) -> torch.Tensor:
        """ParEGO: the augmented Chebyshev scalarisation of the (n, m) scores, with weights drawn uniformly
        from the simplex (normalised exponential draws of ``self.rng``)."""
        from botorch.utils.multi_objective.scalarization import get_chebyshev_scalarization

        draws = [self.rng.expovariate(1.0) for _ in range(scores.shape[1])]
        weights = torch.tensor(draws, dtype=torch.float64) / sum(draws)
        self.samples_for = None  # a new scalarised objective: refit (continue the chain)
        return get_chebyshev_scalarization(weights, scores)(scores)

    def _hyper_samples(self, data: GPData) -> list[list[float]]:
        if self.samples and self.samples_for == self.n_told:
            return self.samples  # no new result since the last fit (a batch of asks)
        post = HyperPosterior(self.spectrum, data)
        d = self.spectrum.d
        start = post.feasible(self.chain if self.chain is not None else initial_theta(d))
        if self.fit == "map":
            starts = [start] if self.chain is None else [start, post.feasible(initial_theta(d))]
            self.samples = [post.fit_map(starts)]
        else:
            if not self.burned_in and self.n_burn:
                start = post.sample(start, self.n_burn, self.rng)[-1]
            self.samples = post.sample(start, self.n_samples, self.rng)
            self.burned_in = True
        self.chain = list(self.samples[-1])
        self.samples_for = self.n_told
        return self.samples

    # -- tell ---------------------------------------------------------------------------------------
    def observe(self, assignment: Assignment, value: float | None, score: float | None) -> None:
        if score is None:
            warnings.warn(f"combo: evaluation of {assignment} failed (value {value!r}); it is left out of the GP "
                          "and not proposed again", ComboWarning, stacklevel=3)
        self.observations.append((assignment_key(self.space, assignment), None if score is None else value))

    # -- persistence --------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"options": self.options, "observations": [[list(k), v] for k, v in self.observations],
                "chain": self.chain, "samples": self.samples,
                "samples_for": self.samples_for, "burned_in": self.burned_in, "mo_chains": self.mo_chains}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = {**ADDED_OPTIONS, **state.get("options", {})} if state.get("name") == self.name else self.options
        diff = sorted(k for k in self.options if saved.get(k) != self.options[k])
        if diff:  # checked before anything is loaded, so a refused state leaves this instance as it was
            mine = {k: self.options[k] for k in diff}
            raise ValueError(f"combo: the saved state was made with other options: saved "
                             f"{ {k: saved.get(k) for k in diff} }, this instance {mine}")
        super().load_state_dict(state)

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.observations = [(tuple(k), self.told_value(v)) for k, v in state["observations"]]
        if "seen" not in state:  # saved before the ledger: the told keys are the observations'
            self.ledger.seen = {k for k, _ in self.observations}
        self.chain = None if state["chain"] is None else [float(v) for v in state["chain"]]
        self.samples = [[float(v) for v in s] for s in state["samples"]]
        self.samples_for = state["samples_for"]
        self.burned_in = bool(state["burned_in"])
        chains = state.get("mo_chains") or [None] * self.n_objectives
        self.mo_chains = [None if c is None else [float(v) for v in c] for c in chains]
