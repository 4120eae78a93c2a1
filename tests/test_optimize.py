"""`nas.optimize` and its History on plain objectives: results, failures, modes, seeds, JSON."""

from __future__ import annotations

import math

import pytest

import nas
from nas.optimize import Evaluation, History
from nas.space import as_space

VARIABLES = [nas.Categorical("op", ("conv", "pool", "skip")), nas.Ordinal("depth", (1, 2, 3, 4))]


def readme_objective(a: dict) -> float:
    return -abs(a["depth"] - 3) + (a["op"] == "conv")


@pytest.mark.parametrize("strategy, options", [("evolution", {"population_size": 5, "sample_size": 2}),
                                               ("random", {})])
def test_finds_the_optimum_and_records_every_evaluation(strategy, options):
    h = nas.optimize(readme_objective, VARIABLES, strategy=strategy, budget=12, seed=0, **options)
    assert isinstance(h, History) and len(h) == 12 and h.strategy == strategy and h.seed == 0
    assert h.best == {"op": "conv", "depth": 3} and h.best_value == 1.0  # 12 distinct points cover the space
    assert h.values == [readme_objective(e.assignment) for e in h.evaluations]
    assert all(e.ok and e.error is None and e.seconds >= 0 for e in h)
    assert [e.elapsed_s for e in h] == sorted(e.elapsed_s for e in h)
    curve = h.best_so_far()
    assert curve == [max(h.values[: i + 1]) for i in range(12)] and curve[-1] == h.best_value


def test_min_mode_and_a_search_space_object():
    space = as_space(VARIABLES, name="toy")
    h = nas.optimize(readme_objective, space, strategy="random", budget=12, seed=1, mode="min")
    assert h.best_value == -2.0 and h.best["depth"] == 1 and h.best["op"] != "conv"
    assert h.best_so_far() == [min(h.values[: i + 1]) for i in range(12)]


def test_failures_are_recorded_and_the_loop_goes_on():
    def objective(a):
        if a["op"] == "pool":
            raise RuntimeError(f"pool of depth {a['depth']} does not build")
        if a["op"] == "skip":
            return math.nan if a["depth"] % 2 else None
        return float(a["depth"])

    h = nas.optimize(objective, VARIABLES, strategy="random", budget=12, seed=0)
    assert len(h) == 12 and h.n_failed == 8
    for e in h:
        if e.assignment["op"] == "pool":
            assert e.value is None and e.error == f"RuntimeError: pool of depth {e.assignment['depth']} does not build"
        elif e.assignment["op"] == "skip":
            assert e.value is None and e.error == ("objective returned NaN" if e.assignment["depth"] % 2
                                                   else "objective returned None (NoneType), not a number")
        else:
            assert e.ok and e.error is None
    assert h.best == {"op": "conv", "depth": 4} and h.best_value == 4.0
    assert sum(math.isnan(v) for v in h.values) == 8
    curve = h.best_so_far()
    first_ok = next(i for i, e in enumerate(h) if e.ok)
    assert all(math.isnan(v) for v in curve[:first_ok]) and curve[-1] == 4.0


def test_all_failing_and_empty_histories():
    h = nas.optimize(lambda a: 1 / 0, VARIABLES, strategy="evolution", budget=5, population_size=3, sample_size=1)
    assert len(h) == 5 and h.n_failed == 5 and h.best is None and h.best_value is None
    assert all(e.error == "ZeroDivisionError: division by zero" for e in h)
    empty = nas.optimize(readme_objective, VARIABLES, budget=0)
    assert len(empty) == 0 and empty.best is None and empty.best_so_far() == []


def test_numeric_returns_are_accepted_and_strings_are_not():
    np = pytest.importorskip("numpy")
    outs = iter([np.float32(2.5), 3, "4.0", True])
    h = nas.optimize(lambda a: next(outs), VARIABLES, strategy="random", budget=4)
    assert [e.value for e in h] == [2.5, 3.0, None, 1.0]
    assert h.evaluations[2].error == "objective returned '4.0' (str), not a number"


def test_objective_gets_a_copy():
    def objective(a):
        a["depth"] = 99
        return 0.0

    h = nas.optimize(objective, VARIABLES, strategy="evolution", budget=8, population_size=2, sample_size=1)
    assert all(e.assignment["depth"] in (1, 2, 3, 4) for e in h)


def test_seeds_reproduce():
    def run(seed):
        h = nas.optimize(readme_objective, VARIABLES, budget=8, seed=seed, population_size=3, sample_size=2)
        return [e.assignment for e in h]

    assert run(4) == run(4) and run(4) != run(5)


def test_history_round_trips_through_json():
    h = nas.optimize(lambda a: math.nan if a["depth"] == 2 else readme_objective(a), VARIABLES, strategy="random",
                     budget=8, seed=2, mode="min")
    back = History.from_json(h.to_json(indent=1))
    assert back == h and back.best == h.best and back.best_value == h.best_value and back.mode == "min"
    assert isinstance(back.evaluations[0], Evaluation)


def test_bad_calls_name_the_fault():
    with pytest.raises(ValueError, match="population_size"):
        nas.optimize(readme_objective, VARIABLES, population_size=3, sample_size=5)
    with pytest.raises(ValueError, match="no option.*'popsize'"):
        nas.optimize(readme_objective, VARIABLES, popsize=3)
    with pytest.raises(ValueError, match="unknown strategy 'annealing'"):
        nas.optimize(readme_objective, VARIABLES, strategy="annealing")
    with pytest.raises(ValueError, match="budget"):
        nas.optimize(readme_objective, VARIABLES, budget=-1)
    with pytest.raises(TypeError, match="callable"):
        nas.optimize({"op": "conv"}, VARIABLES)
    with pytest.raises(nas.SpaceError, match="nas.Categorical or nas.Ordinal"):
        nas.optimize(readme_objective, [("op", ["conv"])])
