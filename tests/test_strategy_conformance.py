"""The ask/tell contract (`nas.strategies.base`) that every registered strategy keeps, checked for each name
in `nas.strategies.STRATEGIES` (a strategy registered later is covered without editing this file; give it
small options in `OPTIONS` if its defaults are slow): seeded repeatability, save/restore mid-run, tells in
any order, failures, constraint rejections and an exhausted space; each with one objective and with two
(a multi-objective strategy, told a vector of values: ``<name>-2obj``)."""

from __future__ import annotations

import json
import math
import random
import warnings

import numpy as np
import pytest

import nas
from nas.space import as_space
from nas.strategies import STRATEGIES, Strategy, make_strategy
from nas.strategies.ledger import assignment_key

# small settings per strategy so that every test runs in at most a few seconds; unknown names: defaults
OPTIONS: dict[str, dict] = {
    "evolution": {"population_size": 4, "sample_size": 2},
    "combo": {"n_initial": 3, "fit": "map", "n_spray": 200, "n_starts": 3, "n_burn": 0},
}

NAMES = sorted(STRATEGIES)
# (name, number of objectives): every strategy with one objective and with two
CASES = [pytest.param((n, 1), id=n) for n in NAMES] + [pytest.param((n, 2), id=f"{n}-2obj") for n in NAMES]


def make(case: tuple[str, int], space: nas.SearchSpace, seed: int = 0, mode: str = "max") -> Strategy:
    name, m = case
    modes = mode if m == 1 else [mode, "min"]
    return make_strategy(name, space, seed=seed, mode=modes, **OPTIONS.get(name, {}))


def mixed_space() -> nas.SearchSpace:
    """1,536 assignments: categorical, ordinal, boolean and a one-value variable."""
    return as_space([nas.Categorical("op", ("conv", "pool", "skip")), nas.Ordinal("depth", tuple(range(1, 9))),
                     nas.Ordinal("width", (8, 16, 32, 64)), nas.Categorical("fixed", ("only",)),
                     nas.Ordinal("flag", (False, True))])


def cat_space(n: int = 6, k: int = 4) -> nas.SearchSpace:
    return as_space([nas.Categorical(f"x{i}", tuple("abcdefgh"[:k])) for i in range(n)])


def objective(space: nas.SearchSpace, a: dict, m: int = 1) -> float | list[float]:
    """Deterministic, not constant, no ties to speak of; with m=2 a second, conflicting objective too."""
    first = float(sum(math.sin(1.3 * j + 0.7 * var.index(a[var.name])) for j, var in enumerate(space.variables)))
    if m == 1:
        return first
    return [first, float(sum(math.cos(0.9 * j + 0.5 * var.index(a[var.name]))
                             for j, var in enumerate(space.variables)))]


def objective_with_failures(space: nas.SearchSpace, a: dict, m: int = 1) -> float | list[float] | None:
    """As `objective`, but about one assignment in five fails (None)."""
    return None if sum(assignment_key(space, a)) % 5 == 0 else objective(space, a, m)


def key(space: nas.SearchSpace, a: dict) -> tuple[int, ...]:
    return assignment_key(space, a)


def drive(s, n: int, outstanding: list[dict], value=objective_with_failures) -> list[dict]:
    """n asks, two kept outstanding (the oldest told once three are), so asks are always pending."""
    asks = []
    for _ in range(n):
        a = s.ask()
        asks.append(a)
        outstanding.append(a)
        if len(outstanding) > 2:
            b = outstanding.pop(0)
            s.tell(b, value(s.space, b, s.n_objectives))
    return asks


def normalised(state: dict) -> str:
    return json.dumps(state, sort_keys=True)


def test_the_registry_is_not_empty():
    assert NAMES and {"random", "evolution", "combo"} <= set(NAMES)


# -- seeds -----------------------------------------------------------------------------------------------


def sequence(case: tuple[str, int], seed: int, n: int = 15) -> list[dict]:
    space = mixed_space()
    s = make(case, space, seed=seed)
    out = []
    for _ in range(n):
        a = s.ask()
        out.append(a)
        s.tell(a, objective(space, a, s.n_objectives))
    return out


@pytest.mark.parametrize("name", CASES)
def test_same_seed_same_proposals_other_seed_other_proposals(name):
    first = sequence(name, seed=1)
    assert sequence(name, seed=1) == first
    assert sequence(name, seed=2) != first


# -- save / restore --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")  # combo warns about the failed evaluations; allowed
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("k", [2, 8])  # early (combo: still random) and later (combo: fitting the GP)
def test_a_restored_state_continues_with_the_same_proposals(name, k):
    space = mixed_space()
    original = make(name, space, seed=7, mode="min")
    outstanding: list[dict] = []
    drive(original, k, outstanding)
    assert original.pending  # asks are outstanding at the save
    text = json.dumps(original.state_dict())
    assert "NaN" not in text and "Infinity" not in text
    fresh = make(name, mixed_space(), seed=12345, mode="min")  # the state carries the seed
    fresh.load_state_dict(json.loads(text))
    assert fresh.n_told == original.n_told and fresh.pending == original.pending and fresh.seen == original.seen

    expected = drive(original, 12, list(outstanding))
    got = drive(fresh, 12, list(outstanding))
    assert got == expected
    assert normalised(fresh.state_dict()) == normalised(original.state_dict())


# -- asynchronous use --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_tells_in_any_order(name):
    space = mixed_space()
    s = make(name, space, seed=3)
    rng = random.Random(0)
    told: list[dict] = []
    for order in ("reversed", "shuffled", "shuffled"):
        batch = [s.ask() for _ in range(5)]
        keys = [key(space, a) for a in batch]
        assert len(set(keys)) == 5, f"a batch repeats an assignment: {batch}"
        assert not set(keys) & {key(space, a) for a in told}, "a batch repeats an assignment already told"
        assert sorted(s.pending) == sorted(keys) and s.taken() == s.seen | set(keys)
        if order == "reversed":
            batch.reverse()
        else:
            rng.shuffle(batch)
        for a in batch:
            s.tell(a, objective(space, a, s.n_objectives))
        told += batch
        assert s.n_told == len(told) and s.pending == []
        assert s.seen == {key(space, a) for a in told}


@pytest.mark.parametrize("name", CASES)
def test_clear_pending_forgets_outstanding_asks_and_the_search_goes_on(name):
    space = mixed_space()
    s = make(name, space, seed=0)
    drive(s, 6, [])
    s.clear_pending()
    assert s.pending == [] and s.taken() == s.seen
    for _ in range(4):
        a = s.ask()
        assert space.validate(a) == a
        s.tell(a, objective(space, a, s.n_objectives))


# -- failures -----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")  # combo warns about failed evaluations; that is allowed
@pytest.mark.parametrize("name", CASES)
def test_failures_count_and_are_not_proposed_again(name):
    space = cat_space(n=6, k=4)  # 4,096 assignments; every one has 18 neighbours
    s = make(name, space, seed=0)
    failed, asked = [], []
    for i, v in enumerate([None, 1.0, math.nan, 2.0, np.float32("nan"), None, 3.0, math.nan, 0.5, None] * 2):
        a = s.ask()
        asked.append(a)
        if v is None or math.isnan(v):
            failed.append(a)
        s.tell(a, v if s.n_objectives == 1 or v is None else [v, 1.0 - v])  # a NaN in either fails it
        assert s.n_told == i + 1 and s.n_rejected == 0
    assert {key(space, a) for a in failed} <= s.seen
    failed_keys = {key(space, a) for a in failed}
    for _ in range(15):
        a = s.ask()
        assert space.validate(a) == a
        assert key(space, a) not in failed_keys, f"failed assignment {a} proposed again"
        asked.append(a)
        s.tell(a, objective(space, a, s.n_objectives))
    assert len({key(space, a) for a in asked}) == len(asked)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("bad", [
    "not a number", [1.0], {"value": 1.0}, "1.5",
])
def test_a_value_that_is_not_a_number_raises(name, bad):
    space = mixed_space()
    s = make(name, space, seed=0)
    drive(s, 4, [], value=objective)
    a = s.ask()
    before = (s.n_told, list(s.pending), set(s.seen))
    with pytest.raises((TypeError, ValueError)):
        s.tell(a, bad)
    assert (s.n_told, list(s.pending), set(s.seen)) == before  # nothing recorded
    s.tell(a, objective(space, a, s.n_objectives))  # the real result can still be told
    assert s.n_told == before[0] + 1


# -- constraint rejections -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_a_rejection_is_neither_a_result_nor_a_failure_and_is_not_proposed_again(name):
    space = mixed_space()
    s = make(name, space, seed=0)
    drive(s, 5, [], value=objective)
    n_told = s.n_told
    rejected = []
    for _ in range(3):
        a = s.ask()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s.reject(a, "too big")
        assert [str(w.message) for w in caught] == [], "reject itself warned"
        rejected.append(key(space, a))
    assert s.n_rejected == 3 and s.n_told == n_told
    assert set(rejected) <= s.seen and not set(rejected) & set(s.pending)

    fresh = make(name, mixed_space(), seed=99)
    fresh.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert fresh.n_rejected == 3 and fresh.n_told == n_told and set(rejected) <= fresh.seen
    for strategy in (s, fresh):
        for _ in range(15):
            a = strategy.ask()
            assert key(space, a) not in rejected, f"rejected assignment {a} proposed again"
            strategy.tell(a, objective(space, a, strategy.n_objectives))


# Documented exceptions to "nothing taken is proposed again while unseen assignments remain", as xfail(strict):
# the test fails once the strategy no longer repeats, so the entry must then go.
REPEATS_WHEN_STUCK = {
    "evolution": "a child is proposed anyway once every one of duplicate_retries mutations of its parent is taken "
                 "(nas/strategies/evolution.py; kept: the NAS-Bench-201 reference runs depend on it); the driver "
                 "answers such a repeat from its cache, or rejects it again",
}


@pytest.mark.filterwarnings("ignore")  # combo warns about failures, equal values or repeats; allowed
@pytest.mark.parametrize("name", [pytest.param((n, m), id=n if m == 1 else f"{n}-2obj",
                                               marks=pytest.mark.xfail(strict=True, reason=REPEATS_WHEN_STUCK[n]))
                                  if n in REPEATS_WHEN_STUCK else pytest.param((n, m), id=n if m == 1 else f"{n}-2obj")
                                  for m in (1, 2) for n in NAMES])
def test_nothing_is_proposed_twice_on_a_small_space_until_it_is_exhausted(name):
    """Nine assignments, nine asks: the first is rejected, the second fails, the rest succeed. While unseen
    assignments remain, no evaluated, failed, rejected or pending one may come back (several seeds, so
    that a strategy does not pass by luck)."""
    space = cat_space(n=2, k=3)  # nine assignments
    problems = []
    for seed in range(8):
        s = make(name, space, seed=seed)
        kinds: dict[tuple[int, ...], str] = {}
        for i in range(space.size()):
            b = s.ask()
            k = key(space, b)
            if k in kinds:
                problems.append(f"seed {seed}: ask {i + 1} of {space.size()} repeats the {kinds[k]} {b} "
                                f"({space.size() - len(kinds)} unseen left)")
                break
            if i == 0:
                s.reject(b, "too big")
                kinds[k] = "rejected"
            elif i == 1:
                s.tell(b, None)
                kinds[k] = "failed"
            else:
                s.tell(b, objective(space, b, s.n_objectives))
                kinds[k] = "evaluated"
    assert not problems, f"{name}:\n" + "\n".join(problems)


# -- an exhausted space ----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")  # repeats on an exhausted space may warn
@pytest.mark.parametrize("name", CASES)
def test_an_exhausted_space_still_gives_valid_assignments(name):
    space = as_space([nas.Categorical("a", ("x", "y")), nas.Ordinal("b", (1, 2))])  # four assignments
    s = make(name, space, seed=0)
    asked = []
    for _ in range(10):
        a = s.ask()
        assert space.validate(a) == a
        asked.append(key(space, a))
        s.tell(a, objective(space, a, s.n_objectives))
    assert len(set(asked[:4])) == 4
    assert s.n_told == 10
