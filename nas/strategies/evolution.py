"""Regularized evolution (Real, Aggarwal, Huang & Le 2019, "Regularized Evolution for Image Classifier
Architecture Search"), asynchronous and steady-state.

Population of at most ``population_size`` (P) evaluated individuals, kept in the order their results
arrived (oldest first). While it holds fewer than P, `ask` returns uniform random assignments. After that
each `ask` draws ``sample_size`` (S) distinct individuals uniformly (a tournament), takes the fittest of
them as the parent (ties: the first drawn) and returns a mutated copy. Each successful result told is
appended to the population, and when that makes it larger than P one individual is removed: the oldest
(``removal="oldest"``, the paper's regularized variant, the default) or the least fit (``"worst"``, the
non-regularized tournament selection the paper compares against; ties: the oldest of them).

Several objectives (``mode`` a list of directions): the fittest of a tournament is chosen as NSGA-II
chooses (Deb et al. 2002): the lowest non-dominated rank within the population, then the largest crowding
distance within that rank (ties: the first drawn); ``removal="worst"`` removes the individual of the last
rank with the smallest crowding distance (ties: the oldest). Aging (``removal="oldest"``) is unchanged:
the oldest leaves, whatever its rank. Non-dominated sorting is botorch's (`nas.pareto`).

Nothing waits for a generation: any number of asks may be outstanding and tells arrive in any order. A
tell for an assignment that was never asked (a journal replayed after a restore) is handled the same way.

Failed candidates (value None or NaN) are not added to the population, so they neither become parents
nor push anyone out; they do count as evaluated (`n_told`, and they are not proposed again).

Mutations. Child i (i = 0, 1, ... counts the children proposed so far; random initial assignments are
not children) gets ``max(ceil(d - i / r), 1)`` mutations (``mutation_d``, ``mutation_r``): with the
default d=1 one mutation throughout; with d>1 it starts with d and anneals to one by i = (d - 1) * r.
The k mutations change k distinct variables (all mutable ones if there are fewer than k), each chosen
uniformly among the variables with more than one value. A Categorical takes any other value of its
domain; an Ordinal takes an adjacent value (``ordinal_mutation="neighbour"``, default) or any other value
(``"any"``).

Repeats. A child whose assignment was already evaluated or is pending is mutated afresh from the same
parent, up to ``duplicate_retries`` times (default 20); if every retry repeats, the last child is proposed
anyway (the parent's neighbourhood is exhausted). Random initial assignments avoid repeats as
`nas.strategies.random_search.sample_unseen` does. The search driver answers a repeat from its cache, so
a repeat costs a budget slot but no training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nas.space import Assignment, Ordinal, SearchSpace
from nas.strategies.base import Strategy
from nas.strategies.random_search import assignment_key, sample_unseen

REMOVALS = ("oldest", "worst")
ORDINAL_MUTATIONS = ("neighbour", "any")


def mutation_count(i: int, d: int = 1, r: float = 100) -> int:
    """Mutations of child i (0-based): ``max(ceil(d - i / r), 1)``."""
    return max(math.ceil(d - i / r), 1)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"evolution: option {name} must be an integer >= {low}, got {value!r}")
    return value


class RegularizedEvolution(Strategy):
    """Regularized (aging) evolution; see the module docstring for the exact rules.

    Options: ``population_size`` P (default 100), ``sample_size`` S (default 25, 1 <= S <= P),
    ``removal`` ("oldest" | "worst"), ``mutation_d`` (int >= 1, default 1), ``mutation_r`` (> 0, default
    100), ``ordinal_mutation`` ("neighbour" | "any"), ``duplicate_retries`` (int >= 0, default 20).
    """

    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int = 0, mode: str | Sequence[str] = "max", population_size: int = 100,
                 sample_size: int = 25, removal: str = "oldest", mutation_d: int = 1, mutation_r: float = 100,
                 ordinal_mutation: str = "neighbour", duplicate_retries: int = 20):
        """Options (each checked here; a bad one raises `ValueError` naming it):
            population_size: P, the evaluated individuals kept (an int >= 1)
            sample_size: S, the individuals drawn for each tournament (an int, 1 <= S <= P)
            removal: who leaves a full population: "oldest" (regularized, the paper's) or "worst"
            mutation_d: mutations of the first child, annealed to one (an int >= 1; 1: one throughout)
            mutation_r: children per step of that annealing (a number > 0)
            ordinal_mutation: an ordinal variable moves to an adjacent value ("neighbour") or any other ("any")
            duplicate_retries: fresh mutations of a child that repeats an evaluated or pending one (an int >= 0)
        """
        super().__init__(space, seed=seed, mode=mode)
        self.population_size = _check_int("population_size", population_size, 1)
        self.sample_size = _check_int("sample_size", sample_size, 1)
        if sample_size > population_size:
            raise ValueError(f"evolution: option sample_size ({sample_size}) must not exceed population_size "
                             f"({population_size}): the tournament draws from the population")
        if removal not in REMOVALS:
            raise ValueError(f"evolution: option removal must be one of {REMOVALS}, got {removal!r}")
        if ordinal_mutation not in ORDINAL_MUTATIONS:
            raise ValueError(f"evolution: option ordinal_mutation must be one of {ORDINAL_MUTATIONS}, "
                             f"got {ordinal_mutation!r}")
        self.mutation_d = _check_int("mutation_d", mutation_d, 1)
        if isinstance(mutation_r, bool) or not isinstance(mutation_r, int | float) or not mutation_r > 0:
            raise ValueError(f"evolution: option mutation_r must be a number > 0, got {mutation_r!r}")
        self.mutation_r = mutation_r
        self.removal = removal
        self.ordinal_mutation = ordinal_mutation
        self.duplicate_retries = _check_int("duplicate_retries", duplicate_retries, 0)
        self._mutable = [v for v in space.variables if len(v) > 1]
        # individuals {"assignment": dict, "value": float}, oldest first; values as told (not sign-flipped)
        self.population: list[dict[str, Any]] = []
        self.n_children = 0  # children proposed so far: i of the mutation schedule

    @property
    def options(self) -> dict[str, Any]:
        return {"population_size": self.population_size, "sample_size": self.sample_size,
                "removal": self.removal, "mutation_d": self.mutation_d, "mutation_r": self.mutation_r,
                "ordinal_mutation": self.ordinal_mutation, "duplicate_retries": self.duplicate_retries}

    # -- ask ----------------------------------------------------------------------------------------
    def propose(self) -> Assignment:
        taken = self.taken()
        if len(self.population) < self.population_size:
            child = sample_unseen(self.space, self.rng, taken)
        else:
            _, parent = self.tournament()
            k = mutation_count(self.n_children, self.mutation_d, self.mutation_r)
            for _ in range(self.duplicate_retries + 1):
                child = self.mutate(self.population[parent]["assignment"], k)
                if assignment_key(self.space, child) not in taken:
                    break
            self.n_children += 1
        return child

    def tournament(self) -> tuple[list[int], int]:
        """Draw `sample_size` distinct population indices uniformly; return them and the fittest's index."""
        sample = self.rng.sample(range(len(self.population)), min(self.sample_size, len(self.population)))
        if self.multi_objective:
            unfit = self._unfitness()
            return sample, min(sample, key=lambda j: unfit[j])
        best = max(sample, key=lambda j: self.score(self.population[j]["value"]))
        return sample, best

    def _unfitness(self) -> list[tuple[int, float]]:
        """NSGA-II's order of the population, as (non-dominated rank, -crowding distance): smaller is fitter."""
        from nas.pareto import crowding_distances, pareto_ranks

        points = [self.score(p["value"]) for p in self.population]
        ranks = pareto_ranks(points)
        crowding = crowding_distances(points, ranks)
        return [(r, -c) for r, c in zip(ranks, crowding, strict=True)]

    def mutate(self, parent: Assignment, k: int) -> Assignment:
        """A copy of `parent` with k distinct variables (as many as are mutable) changed."""
        child = dict(parent)
        for var in self.rng.sample(self._mutable, min(k, len(self._mutable))):
            if isinstance(var, Ordinal) and self.ordinal_mutation == "neighbour":
                options = var.neighbours(child[var.name])
            else:
                i = var.index(child[var.name])
                options = [v for j, v in enumerate(var.values) if j != i]
            child[var.name] = self.rng.choice(options)
        return child

    # -- tell ---------------------------------------------------------------------------------------
    def observe(self, assignment: Assignment, value: float | None, score: float | None) -> None:
        if score is None:
            return
        self.population.append({"assignment": assignment, "value": value})
        if len(self.population) > self.population_size:
            if self.removal == "oldest":
                del self.population[0]
            elif self.multi_objective:  # max() returns the first (oldest) of equally unfit individuals
                unfit = self._unfitness()
                del self.population[max(range(len(self.population)), key=lambda j: unfit[j])]
            else:  # min() returns the first (oldest) of equally unfit individuals
                worst = min(range(len(self.population)), key=lambda j: self.score(self.population[j]["value"]))
                del self.population[worst]

    # -- persistence --------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {"options": self.options, "population": [dict(p) for p in self.population],
                "n_children": self.n_children}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("options", {}) if state.get("name") == self.name else self.options
        diff = sorted(k for k in self.options if saved.get(k) != self.options[k])
        if diff:  # checked before anything is loaded, so a refused state leaves this instance as it was
            mine = {k: self.options[k] for k in diff}
            raise ValueError(f"evolution: the saved state was made with other options: saved "
                             f"{ {k: saved.get(k) for k in diff} }, this instance {mine}")
        super().load_state_dict(state)

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.population = [{"assignment": self.space.validate(p["assignment"]), "value": self.told_value(p["value"])}
                           for p in state["population"]]
        self.n_children = state["n_children"]
