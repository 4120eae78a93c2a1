"""Regularized evolution and random search on plain objectives: selection, removal, mutation, seeds,
asynchronous use, failures, state round-trips and option errors."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

import nas
from nas.space import SpaceError, as_space
from nas.strategies import make_strategy
from nas.strategies.evolution import RegularizedEvolution, mutation_count
from nas.strategies.random_search import RandomSearch, assignment_key, sample_unseen


def cat_space(n: int = 6, k: int = 4) -> nas.SearchSpace:
    return as_space([nas.Categorical(f"x{i}", tuple("abcdefgh"[:k])) for i in range(n)])


def mixed_space() -> nas.SearchSpace:
    return as_space([nas.Categorical("op", ("conv", "pool", "skip")), nas.Ordinal("depth", tuple(range(1, 9))),
                     nas.Ordinal("width", (8, 16, 32, 64)), nas.Categorical("fixed", ("only",)),
                     nas.Ordinal("flag", (False, True))])


def count_a(a: dict) -> float:
    return float(sum(v == "a" for v in a.values()))


def mixed_objective(a: dict) -> float:
    return -abs(a["depth"] - 6) - abs(a["width"] - 32) / 8 + (a["op"] == "skip") + a["flag"]


def hamming(a: dict, b: dict) -> int:
    return sum(a[k] != b[k] for k in a)


def evolution(space=None, **options) -> RegularizedEvolution:
    return make_strategy("evolution", space or cat_space(), **options)


def fill(s, values):
    """Ask and tell one assignment per value; return the assignments."""
    out = []
    for v in values:
        a = s.ask()
        s.tell(a, v)
        out.append(a)
    return out


# -- regularized evolution: the rules --------------------------------------------------------------


def test_random_until_population_is_full_then_children_of_one_parent():
    s = evolution(population_size=5, sample_size=2)
    fill(s, [1.0, 2.0, 3.0, 4.0])
    assert s.n_children == 0 and len(s.population) == 4
    fill(s, [5.0])
    assert len(s.population) == 5
    parents = [p["assignment"] for p in s.population]
    child = s.ask()
    assert s.n_children == 1
    assert min(hamming(child, p) for p in parents) == 1


def test_tournament_parent_is_best_of_the_drawn_sample():
    s = evolution(population_size=10, sample_size=4)
    values = [3.0, 9.0, 1.0, 7.0, 7.0, 2.0, 8.0, 0.5, 4.0, 6.0]
    fill(s, values)
    assert [p["value"] for p in s.population] == values
    drawn = set()
    for _ in range(200):
        sample, parent = s.tournament()
        assert len(sample) == len(set(sample)) == 4 and set(sample) <= set(range(10))
        assert parent == max(sample, key=lambda j: values[j])  # argmax; ties to the first drawn
        drawn.update(sample)
    assert drawn == set(range(10))  # every individual can be drawn, not only the best
    # `ask` uses the same draw: on a copy of the state, the tournament's parent is the child's parent
    twin = evolution(population_size=10, sample_size=4)
    twin.load_state_dict(json.loads(json.dumps(s.state_dict())))
    _, parent = twin.tournament()
    child = s.ask()
    assert hamming(child, s.population[parent]["assignment"]) == 1


def test_tournament_in_min_mode_picks_the_smallest():
    s = evolution(population_size=4, sample_size=4, mode="min")
    fill(s, [3.0, -2.0, 5.0, 0.0])
    assert s.tournament()[1] == 1


def test_oldest_is_removed():
    s = evolution(population_size=3, sample_size=2)
    told = fill(s, [10.0, 1.0, 5.0])
    child = s.ask()
    s.tell(child, 0.0)  # the worst so far, but the oldest (10.0) goes
    assert [p["value"] for p in s.population] == [1.0, 5.0, 0.0]
    assert [p["assignment"] for p in s.population] == told[1:] + [child]


def test_worst_is_removed_with_removal_worst():
    s = evolution(population_size=3, sample_size=2, removal="worst")
    fill(s, [10.0, 1.0, 5.0])
    s.tell(s.ask(), 7.0)
    assert [p["value"] for p in s.population] == [10.0, 5.0, 7.0]
    s.tell(s.ask(), 2.0)  # the new child is itself the worst
    assert [p["value"] for p in s.population] == [10.0, 5.0, 7.0]
    m = evolution(population_size=3, sample_size=2, removal="worst", mode="min")
    fill(m, [10.0, 1.0, 5.0, 3.0])
    assert [p["value"] for p in m.population] == [1.0, 5.0, 3.0]


@pytest.mark.parametrize("d, r, expected", [
    (1, 100, {0: 1, 1: 1, 50: 1, 1000: 1}),
    (3, 10, {0: 3, 1: 3, 9: 3, 10: 2, 11: 2, 19: 2, 20: 1, 21: 1, 500: 1}),
    (2, 4, {0: 2, 3: 2, 4: 1, 7: 1, 8: 1}),
    (4, 2.5, {0: 4, 2: 4, 3: 3, 5: 2, 6: 2, 7: 2, 8: 1, 9: 1}),
])
def test_mutation_schedule(d, r, expected):
    assert {i: mutation_count(i, d, r) for i in expected} == expected


def test_children_carry_the_scheduled_number_of_distinct_mutations():
    d, r = 4, 3
    s = evolution(cat_space(n=8, k=4), population_size=4, sample_size=4, mutation_d=d, mutation_r=r,
                  removal="worst")
    fill(s, [1.0, 2.0, 3.0, 4.0])
    parent = s.population[3]["assignment"]  # S = P: the best is the parent
    for i in range(15):
        child = s.ask()
        assert hamming(child, parent) == mutation_count(i, d, r) == max(math.ceil(d - i / r), 1)
        s.tell(child, 0.0)  # worse than every individual: removed at once, the population stays


def test_more_mutations_than_mutable_variables_change_all_of_them():
    space = as_space([nas.Categorical("a", (1, 2)), nas.Ordinal("b", (1, 2, 3)), nas.Categorical("c", ("x",))])
    s = evolution(space, population_size=1, sample_size=1, mutation_d=5, duplicate_retries=0)
    (parent,) = fill(s, [1.0])
    child = s.ask()
    assert child["a"] != parent["a"] and child["b"] != parent["b"] and child["c"] == "x"


@pytest.mark.parametrize("how", ["neighbour", "any"])
def test_ordinal_mutation(how):
    space = as_space([nas.Ordinal("depth", tuple(range(20)))])
    s = evolution(space, population_size=3, sample_size=3, ordinal_mutation=how, duplicate_retries=0)
    fill(s, [1.0, 2.0, 3.0])
    steps = []
    for _ in range(60):
        parent = max(s.population, key=lambda p: p["value"])["assignment"]
        child = s.ask()
        steps.append(abs(child["depth"] - parent["depth"]))
        s.tell(child, -abs(child["depth"] - 10.3))  # no ties: the parent is the unique best
    assert min(steps) >= 1
    if how == "neighbour":
        assert set(steps) == {1}
    else:
        assert max(steps) > 1


def test_categorical_and_boolean_mutations_take_another_value():
    s = evolution(mixed_space(), population_size=2, sample_size=2, removal="worst")
    fill(s, [0.0, 1.0])
    parent = s.population[1]["assignment"]
    for _ in range(40):
        child = s.ask()
        (changed,) = [k for k in child if child[k] != parent[k]]
        assert changed != "fixed"  # one value: never mutated
        s.tell(child, -1.0)


def test_no_repeats_while_the_neighbourhood_has_unseen_points():
    s = evolution(cat_space(n=6, k=4), population_size=10, sample_size=3)
    asked = []
    for _ in range(150):
        a = s.ask()
        asked.append(a)
        s.tell(a, count_a(a))
    assert len({tuple(sorted(a.items())) for a in asked}) == 150


def test_repeats_are_proposed_when_the_space_is_exhausted():
    space = as_space([nas.Categorical("n", (1, 2, 3))])
    for name in ("evolution", "random"):
        s = make_strategy(name, space, seed=0, **({"population_size": 2, "sample_size": 1} if name == "evolution"
                                                  else {}))
        asked = fill(s, [1.0, 2.0, 3.0, 4.0, 5.0])
        assert sorted(a["n"] for a in asked[:3]) == [1, 2, 3], name  # every point once before any repeat
        assert all(a["n"] in (1, 2, 3) for a in asked)


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_pending_asks_are_not_proposed_twice(name):
    space = cat_space(n=2, k=2)  # four points
    s = make_strategy(name, space, seed=0, **({"population_size": 4, "sample_size": 2} if name == "evolution"
                                              else {}))
    assert len({tuple(s.ask().values()) for _ in range(4)}) == 4


def test_sample_unseen_enumerates_when_rejection_keeps_failing():
    space = cat_space(n=3, k=3)
    every = [assignment_key(space, a) for a in
             ({"x0": a, "x1": b, "x2": c} for a in "abc" for b in "abc" for c in "abc")]
    rng = random.Random(0)
    for left in every[::5]:
        taken = set(every) - {left}
        assert assignment_key(space, sample_unseen(space, rng, taken, tries=0)) == left
    assert assignment_key(space, sample_unseen(space, rng, set(every))) in every  # exhausted: any point


def test_evolution_finds_the_optimum_of_a_mixed_space():
    s = evolution(mixed_space(), seed=3, population_size=10, sample_size=3)
    values = []
    for _ in range(120):
        a = s.ask()
        values.append(mixed_objective(a))
        s.tell(a, values[-1])
    best = max(values)
    assert best == 2.0  # skip, depth 6, width 32, flag True; 1,536 points, 120 evaluations


# -- seeds, asynchronous use, failures ----------------------------------------------------------------


def run_asks(name: str, seed: int, n: int = 60, **options) -> list[dict]:
    s = make_strategy(name, mixed_space(), seed=seed, **options)
    out = []
    for _ in range(n):
        a = s.ask()
        out.append(a)
        s.tell(a, mixed_objective(a))
    return out


@pytest.mark.parametrize("name, options", [("evolution", {"population_size": 8, "sample_size": 3}), ("random", {})])
def test_seeds_reproduce(name, options):
    assert run_asks(name, 1, **options) == run_asks(name, 1, **options)
    assert run_asks(name, 1, **options) != run_asks(name, 2, **options)


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_asynchronous_asks_and_out_of_order_tells(name):
    options = {"population_size": 4, "sample_size": 2} if name == "evolution" else {}
    s = make_strategy(name, cat_space(), seed=0, **options)
    batch = [s.ask() for _ in range(6)]  # six workers busy at once
    assert len({tuple(a.values()) for a in batch}) == 6 and len(s.pending) == 6
    for a in reversed(batch):
        s.tell(a, count_a(a))
    assert s.n_told == 6 and s.pending == []
    # steady state: keep 3 outstanding, tell the oldest outstanding one at a time
    outstanding = [s.ask() for _ in range(3)]
    for _ in range(40):
        a = outstanding.pop(0)
        s.tell(a, count_a(a))
        outstanding.append(s.ask())
        assert len(s.pending) == 3
    if name == "evolution":
        assert len(s.population) == 4 and s.n_children == 43


def test_tell_of_an_assignment_never_asked_is_accepted():
    s = evolution(population_size=2, sample_size=1)
    a = {f"x{i}": "a" for i in range(6)}
    s.tell(a, 6.0)
    assert s.population == [{"assignment": a, "value": 6.0}] and s.pending == []
    with pytest.raises(SpaceError, match="x0"):
        s.tell({**a, "x0": "z"}, 1.0)
    with pytest.raises(SpaceError, match="x5"):
        s.tell({k: v for k, v in a.items() if k != "x5"}, 1.0)


@pytest.mark.parametrize("failed", [None, math.nan, np.float32("nan")])
def test_failures_count_but_never_enter_the_population(failed):
    s = evolution(population_size=3, sample_size=2)
    asked = fill(s, [failed, 1.0, failed, 2.0, failed])
    assert s.n_told == 5 and len(s.population) == 2 and s.n_children == 0  # still filling
    assert [p["value"] for p in s.population] == [1.0, 2.0]
    fill(s, [3.0])
    child = s.ask()
    s.tell(child, failed)  # a failed child pushes nobody out
    assert [p["value"] for p in s.population] == [1.0, 2.0, 3.0]
    asked.append(child)
    more = [s.ask() for _ in range(30)]
    keys = {tuple(a.values()) for a in asked}
    assert not keys & {tuple(a.values()) for a in more}  # failed points are not proposed again


def test_random_search_handles_failures_and_does_not_repeat():
    s = make_strategy("random", cat_space(n=2, k=4), seed=0)
    asked = fill(s, [math.nan if i % 3 else float(i) for i in range(16)])
    assert len({tuple(a.values()) for a in asked}) == 16 and s.n_told == 16


def test_random_search_is_uniform_per_variable():
    s = make_strategy("random", cat_space(n=3, k=4), seed=0)
    counts = np.zeros((3, 4))
    for _ in range(2000):
        a = s.ask()
        for i in range(3):
            counts[i, "abcd".index(a[f"x{i}"])] += 1
    assert counts.min() > 400 and counts.max() < 600  # expected 500 each; sd about 19


def test_clear_pending_forgets_outstanding_asks():
    s = evolution(population_size=2, sample_size=1)
    s.ask()
    s.ask()
    s.clear_pending()
    assert s.pending == []


# -- state round-trip ----------------------------------------------------------------------------------


def drive(s, n: int, outstanding: list[dict]) -> list[dict]:
    """n asks, three kept outstanding, tells of the oldest outstanding; depth 3 fails."""
    asks = []
    for _ in range(n):
        a = s.ask()
        asks.append(a)
        outstanding.append(a)
        if len(outstanding) > 3:
            b = outstanding.pop(0)
            s.tell(b, None if b["depth"] == 3 else mixed_objective(b))
    return asks


@pytest.mark.parametrize("name, options", [
    ("evolution", {"population_size": 6, "sample_size": 3}),
    ("evolution", {"population_size": 5, "sample_size": 2, "removal": "worst", "mutation_d": 3,
                   "mutation_r": 4, "ordinal_mutation": "any"}),
    ("random", {}),
])
@pytest.mark.parametrize("k", [4, 25])  # while filling the population, and after
def test_state_round_trips_through_json(name, options, k):
    whole = make_strategy(name, mixed_space(), seed=5, mode="min", **options)
    expected = drive(whole, k + 40, [])

    first = make_strategy(name, mixed_space(), seed=5, mode="min", **options)
    outstanding: list[dict] = []
    got = drive(first, k, outstanding)
    text = json.dumps(first.state_dict())
    assert "NaN" not in text and "Infinity" not in text
    fresh = make_strategy(name, mixed_space(), seed=999, mode="min", **options)  # the state carries the seed
    fresh.load_state_dict(json.loads(text))
    got += drive(fresh, 40, outstanding)
    assert got == expected
    assert fresh.state_dict() == whole.state_dict()


def test_state_of_another_strategy_or_other_options_is_refused():
    s = evolution(population_size=4, sample_size=2)
    fill(s, [1.0, 2.0])
    state = json.loads(json.dumps(s.state_dict()))
    with pytest.raises(ValueError, match="'evolution', not 'random'"):
        RandomSearch(cat_space()).load_state_dict(state)
    other = evolution(population_size=4, sample_size=3)
    with pytest.raises(ValueError, match="sample_size"):
        other.load_state_dict(state)
    assert other.population == [] and other.n_told == 0  # untouched


# -- options -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, match", [
    ({"population_size": 5, "sample_size": 6}, "sample_size.*population_size"),
    ({"removal": "youngest"}, "removal.*oldest"),
    ({"ordinal_mutation": "jump"}, "ordinal_mutation"),
    ({"population_size": 0}, "population_size"),
    ({"population_size": 10.5}, "population_size"),
    ({"sample_size": 0}, "sample_size"),
    ({"mutation_d": 0}, "mutation_d"),
    ({"mutation_r": 0}, "mutation_r"),
    ({"mutation_r": "fast"}, "mutation_r"),
    ({"duplicate_retries": -1}, "duplicate_retries"),
    ({"tournament": 3}, "tournament"),
])
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        make_strategy("evolution", cat_space(), **options)


def test_bad_mode_and_unknown_strategy():
    with pytest.raises(ValueError, match="mode"):
        make_strategy("random", cat_space(), mode="maximise")
    with pytest.raises(ValueError, match="unknown strategy 'evolve'"):
        make_strategy("evolve", cat_space())
