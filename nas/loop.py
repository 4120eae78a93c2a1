"""The one ask/tell loop every search runs: a strategy, the wrappers around it, a journal.

`AskTellLoop.next()` asks the strategy for proposals until one needs evaluating; `finish()` takes that
evaluation's `Outcome`. Who evaluates differs, the loop does not: Ray Tune trials (`nas.search`, where
Tune's Searcher calls `next` and `finish`), or this process (`run_in_process`: `nas bench` with simulated
time, `nas.optimize` with a Python objective).

Cross-cutting behaviour lives in wrappers, not in the strategies or the driver (as NNI's middlewares or
Ray Tune's Searcher wrappers). Each wrapper may answer a proposal before it is evaluated (`screen`) and
hears every outcome (`record`):

- `BuildArchitecture`: builds the proposal's architecture graph. A candidate that can never be built (the
  space's build function raises `nas.space.SpaceError`: an invalid combination of values, e.g. a
  timeception layer whose groups do not divide its channels) is *rejected*, like a constraint; any other
  exception in the build (a bug, a shape error in the graph) is a failed outcome (the candidate fails,
  not the search);
- `Measure`: the metrics known before evaluation (``params``, ``flops`` counted on the graph; ``latency_ms``
  from a user's latency table, `nas.latency_table`), those the search reads, into ``proposal.info["metrics"]``;
  a proposal the latency table has no entry for is rejected;
- `Constraints`: a proposal over a limit (parameters, multiply-accumulates, or any constraint of
  `nas.objectives` on a metric `Measure` knows) is *rejected*: its own kind of outcome, told to the
  strategy with `Strategy.reject`, never as a failure, and it uses no budget;
- `Deduplicate`: a proposal whose architecture was evaluated before is answered from that result
  (marked ``cached``, with the status of that result: "ok", or "stopped" for a trial stopped early, never
  passed off as a complete one); it uses a budget slot but no evaluation. Failed results are not reused
  (a later proposal of the architecture is evaluated again).

The loop itself never evaluates one architecture twice at once: a proposal whose `arch_id` is already in
flight is *deferred* (`next` returns `LATER`, "nothing now, ask again later", as Tune's
``Searcher.suggest`` returning None) and answered from that evaluation when it finishes (marked
``cached``; if that evaluation failed, with the same failure). A deferred proposal holds its budget slot
from the moment it is asked, so the budget is exact: `n_done + in_flight + deferred` never exceeds it.
A sequential executor (`run_in_process`) has nothing in flight when it asks, so it never sees `LATER`.

Statuses (`Outcome.status`): "ok" (a complete evaluation), "failed" (``error`` says why), "oom" (a failure
of its own kind: out of memory, also when the executor ran it again alone; told as a failure), "rejected"
(never evaluated, uses no budget, not journaled) and "stopped": the executor's scheduler stopped the
evaluation early (ASHA, ``--asha``) at a lower fidelity (the epoch reached is in ``extra["epoch"]``).
A stopped outcome's ``value`` is its partial value (the metric at the epoch it reached). The strategy is
told that partial value, as Ray Tune's and NNI's searchers receive a stopped trial's last result: it is a
pessimistic estimate, so an architecture ASHA found weak at a low rung rarely becomes a parent or an
incumbent. The search's outputs (leaderboard, best.json, best weights, export ranks) never rank a stopped
trial against complete ones.

Failure handling of the result itself (`check_value`): an evaluation whose value is missing or not
finite is a failure. With several objectives a value is a list, one per objective, and every one of them
must be finite. Pending tracking of the strategy's own asks is in `nas.strategies.base`; the loop
counts proposals in flight and deferred, so the budget is never over-committed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nas.space import Assignment, SpaceError
from nas.strategies.base import Strategy

OK, FAILED, REJECTED, STOPPED = "ok", "failed", "rejected", "stopped"
OOM = "oom"  # a failure: the evaluation ran out of memory, also when the executor ran it again alone
VALUED = (OK, STOPPED)  # statuses whose value the strategy is told (a stopped one's is partial)
MAX_REJECTIONS_IN_A_ROW = 2000


class _Later:
    """`AskTellLoop.next`'s "nothing now, ask again later": the proposal it got repeats an architecture
    in flight and was deferred until that evaluation finishes."""

    def __repr__(self) -> str:
        return "LATER"

    def __bool__(self) -> bool:
        return False


LATER = _Later()


class TooManyRejections(RuntimeError):
    """The strategy keeps proposing what a constraint rules out; the message names the last reason."""


@dataclass
class Proposal:
    """One assignment on its way to an evaluation. ``tag`` is the executor's name for it (a trial id)."""

    assignment: Assignment
    tag: str = ""
    arch: Any = None  # the ArchGraph, once built
    arch_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what wrappers learnt on the way (e.g. params)


@dataclass
class Outcome:
    """What came of a proposal: ``status`` "ok" (``value`` is the search metric), "stopped" (stopped early
    by the executor's scheduler; ``value`` is the metric at the fidelity it reached, ``extra["epoch"]``),
    "failed" (``error`` says why) or "rejected" (by a constraint or as impossible to build, ``error`` says
    which; never evaluated). ``cached`` names the earlier evaluation an answer was taken from."""

    status: str
    value: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cached: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what the executor wants journaled with it

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def told_value(self) -> float | None:
        """What the strategy is told: the value of a complete or stopped evaluation, else None (failed)."""
        return self.value if self.status in VALUED else None


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_value(outcome: Outcome, error: str = "the evaluation reported no finite value") -> Outcome:
    """Failure handling of a result: an ok outcome without a finite value (a list of them, with several
    objectives) becomes a failure (`error`)."""
    vector = isinstance(outcome.value, list | tuple)
    finite = all(_finite(v) for v in outcome.value) if vector else _finite(outcome.value)
    if outcome.ok and not finite:
        return Outcome(FAILED, None, outcome.metrics, error, extra=outcome.extra)
    if outcome.ok:
        outcome.value = [float(v) for v in outcome.value] if vector else float(outcome.value)
    return outcome


class Wrapper(Protocol):
    def screen(self, proposal: Proposal) -> Outcome | None:
        """An outcome that settles `proposal` without evaluating it, or None to let it through."""

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        """Hear what came of a proposal (evaluated or settled by any wrapper)."""


class Journal(Protocol):
    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        """Keep the outcome; called before the strategy hears of it (a crash then loses nothing)."""

    def told(self, proposal: Proposal, outcome: Outcome) -> None:
        """Called after the strategy was told (snapshots, progress)."""


class BuildArchitecture:
    """Builds ``proposal.arch`` with `build(assignment)` and its `arch_id`. A `SpaceError` (the space says
    this combination can never be built) rejects the proposal; any other build error fails it."""

    def __init__(self, build: Callable[[Assignment], Any]):
        self.build = build

    def screen(self, proposal: Proposal) -> Outcome | None:
        from nas.graph import arch_id

        try:
            proposal.arch = self.build(proposal.assignment)
            proposal.arch_id = arch_id(proposal.arch)
        except SpaceError as e:  # an impossible candidate: not a failure, and it uses no budget
            proposal.arch = proposal.arch_id = None
            return Outcome(REJECTED, error=f"cannot be built: {e}")
        except Exception as e:  # the candidate fails, not the search
            return Outcome(FAILED, error=f"{type(e).__name__}: {e}")
        return None

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        pass


class Measure:
    """Puts the metrics of `names` known before evaluation into ``proposal.info["metrics"]``: ``params``
    and ``flops`` counted on the built graph, ``latency_ms`` from `latency` (a
    `nas.latency_table.LatencyTable`; a proposal it has no entry for is rejected, naming the file)."""

    def __init__(self, names: Iterable[str], latency: Any = None):
        self.names = [n for n in ("params", "flops", "latency_ms") if n in set(names)]
        self.latency = latency

    def screen(self, proposal: Proposal) -> Outcome | None:
        from nas.builder import count_flops, count_params

        if proposal.arch is None or not self.names:
            return None
        known = proposal.info.setdefault("metrics", {})
        for name in self.names:
            if name == "params":
                known["params"] = count_params(proposal.arch)
            elif name == "flops":
                known["flops"] = count_flops(proposal.arch)
            elif self.latency is not None:
                latency = self.latency.lookup(proposal.arch_id, proposal.assignment)
                if latency is None:
                    return Outcome(REJECTED, error=f"no latency for architecture {proposal.arch_id} in "
                                                   f"{self.latency.path}")
                known["latency_ms"] = latency
        return None

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        pass


class Constraints:
    """Rejects a built proposal over ``max_params`` parameters or ``max_flops`` multiply-accumulates per
    sample (None: no limit), or breaking one of `rules` (`nas.objectives.Constraint`s) on a metric known
    before evaluation (in ``proposal.info["metrics"]``, see `Measure`), before it is evaluated."""

    def __init__(self, max_params: int | None = None, max_flops: int | None = None, rules: Iterable[Any] = ()):
        self.max_params, self.max_flops = max_params, max_flops
        self.rules = list(rules)

    def violation(self, arch: Any, known: dict[str, Any] | None = None) -> str | None:
        """Why `arch` exceeds the limits or breaks a rule on the metrics `known` of it, or None."""
        from nas.builder import count_flops, count_params
        from nas.objectives import violations

        known = known or {}
        if self.max_params is not None and (n := known.get("params", None) or count_params(arch)) > self.max_params:
            return f"{n:,} parameters > max_params {self.max_params:,}"
        if self.max_flops is not None and (n := known.get("flops", None) or count_flops(arch)) > self.max_flops:
            return f"{n:,} multiply-accumulates > max_flops {self.max_flops:,}"
        broken = violations(self.rules, known)
        return "; ".join(broken) if broken else None

    def screen(self, proposal: Proposal) -> Outcome | None:
        why = None if proposal.arch is None else self.violation(proposal.arch, proposal.info.get("metrics"))
        return None if why is None else Outcome(REJECTED, error=why)

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        pass


class Deduplicate:
    """Answers a proposal whose architecture (by `arch_id`) was evaluated before, completely or stopped
    early, with that result and its status. ``first`` maps arch_id -> (value, metrics, tag, extra, status)
    of the first such evaluation; `earlier` gives them as (arch_id, value, metrics, tag, extra[, status])
    (status "ok" where left out). Failures are not reused."""

    def __init__(self, earlier: Iterable[tuple[Any, ...]] = ()):
        self.first: dict[str, tuple[float, dict[str, Any], str, dict[str, Any], str]] = {}
        for aid, value, metrics, tag, extra, *status in earlier:
            self.first.setdefault(aid, (value, metrics, tag, extra, status[0] if status else OK))

    def screen(self, proposal: Proposal) -> Outcome | None:
        hit = self.first.get(proposal.arch_id) if proposal.arch_id else None
        if hit is None:
            return None
        value, metrics, tag, extra, status = hit
        return Outcome(status, value, dict(metrics), cached=tag, extra=dict(extra))

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        if outcome.status in VALUED and proposal.arch_id and not outcome.cached:
            self.first.setdefault(proposal.arch_id, (outcome.value, outcome.metrics, _name(proposal), outcome.extra,
                                                     outcome.status))


class AskTellLoop:
    """Asks `strategy` through `wrappers` (in order) until a proposal needs evaluating, within `budget`
    outcomes (None: no count limit; the executor stops). Outcomes settled by a wrapper (cached, failed to
    build) count toward the budget; rejections do not. A proposal whose architecture is being evaluated
    is deferred until that evaluation finishes, then answered from it (see the module docstring)."""

    def __init__(self, strategy: Strategy, wrappers: Iterable[Wrapper] = (), journal: Journal | None = None,
                 budget: int | None = None, n_done: int = 0,
                 max_rejections_in_a_row: int = MAX_REJECTIONS_IN_A_ROW):
        self.strategy = strategy
        self.wrappers = list(wrappers)
        self.journal = journal
        self.budget = budget
        self.n_done = n_done  # outcomes recorded (counting those of earlier sessions of a resumed run)
        self.in_flight = 0
        self.n_rejected = 0
        self.max_rejections_in_a_row = max_rejections_in_a_row
        self.running: dict[str, Proposal] = {}  # arch_id -> the proposal being evaluated
        self.deferred: dict[str, list[Proposal]] = {}  # arch_id -> proposals waiting for that evaluation

    @property
    def n_deferred(self) -> int:
        return sum(len(q) for q in self.deferred.values())

    def committed(self) -> int:
        """Budget slots taken: outcomes on record, evaluations in flight, proposals deferred."""
        return self.n_done + self.in_flight + self.n_deferred

    def remaining(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.committed(), 0)

    def next(self, tag: str = "") -> Proposal | _Later | None:
        """The next proposal to evaluate; `LATER` when the proposal asked for repeats an architecture in
        flight (it is deferred: ask again later); None when the budget is committed."""
        in_a_row = 0
        while self.budget is None or self.committed() < self.budget:
            proposal = Proposal(self.strategy.ask(), tag=tag)
            outcome = None
            for w in self.wrappers:
                outcome = w.screen(proposal)
                if outcome is not None:
                    break
            if outcome is None:
                aid = proposal.arch_id
                if aid is not None and aid in self.running:
                    self.deferred.setdefault(aid, []).append(proposal)
                    return LATER
                self.in_flight += 1
                if aid is not None:
                    self.running[aid] = proposal
                return proposal
            if outcome.status == REJECTED:
                self.strategy.reject(proposal.assignment, outcome.error or "")
                self.n_rejected += 1
                in_a_row += 1
                if in_a_row >= self.max_rejections_in_a_row:
                    raise TooManyRejections(f"{in_a_row} proposals in a row were rejected (last: {outcome.error})")
                continue
            self._settle(proposal, outcome)
        return None

    def finish(self, proposal: Proposal, outcome: Outcome) -> None:
        """The outcome of evaluating a proposal that `next` returned; proposals deferred on its
        architecture are answered from it (cached) right after."""
        self.in_flight -= 1
        waiting = self._release(proposal)
        self._settle(proposal, outcome)
        for q in waiting:
            self._settle(q, Outcome(outcome.status, outcome.value, dict(outcome.metrics), outcome.error,
                                    cached=_name(proposal), extra=dict(outcome.extra)))

    def abandon(self, proposal: Proposal) -> None:
        """A proposal `next` returned that will not be evaluated (the executor stopped first); proposals
        deferred on it are dropped with it."""
        self.in_flight -= 1
        self._release(proposal)

    def _release(self, proposal: Proposal) -> list[Proposal]:
        aid = proposal.arch_id
        if aid is None or self.running.get(aid) is not proposal:
            return []
        del self.running[aid]
        return self.deferred.pop(aid, [])

    def _settle(self, proposal: Proposal, outcome: Outcome) -> None:
        self.n_done += 1
        if self.journal is not None:
            self.journal.record(proposal, outcome)
        self.strategy.tell(proposal.assignment, outcome.told_value)
        for w in self.wrappers:
            w.record(proposal, outcome)
        if self.journal is not None:
            self.journal.told(proposal, outcome)


def _name(proposal: Proposal) -> str:
    """How a cached answer names the evaluation it came from: its tag (a trial id), else its arch_id."""
    return proposal.tag or f"arch {proposal.arch_id}"


def run_in_process(loop: AskTellLoop, evaluate: Callable[[Proposal], Outcome],
                   stop: Callable[[Proposal, Outcome], bool] | None = None) -> None:
    """Execute `loop` here, one evaluation at a time, until the budget is committed or `stop(proposal,
    outcome)` says the outcome is past the end (it is then not told: it did not finish in time). Nothing
    is in flight when it asks, so no proposal is ever deferred."""
    while (proposal := loop.next()) is not None:
        if proposal is LATER:  # only with an evaluation in flight, which this executor never has
            raise RuntimeError("run_in_process: the loop deferred a proposal with nothing in flight")
        outcome = evaluate(proposal)
        if stop is not None and stop(proposal, outcome):
            loop.abandon(proposal)
            return
        loop.finish(proposal, outcome)
