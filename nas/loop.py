"""The one ask/tell loop every search runs: a strategy, the wrappers around it, a journal.

`AskTellLoop.next()` asks the strategy for proposals until one needs evaluating; `finish()` takes that
evaluation's `Outcome`. Who evaluates differs, the loop does not: Ray Tune trials (`nas.search`, where
Tune's Searcher calls `next` and `finish`), or this process (`run_in_process`: `nas bench` with simulated
time, `nas.optimize` with a Python objective).

Cross-cutting behaviour lives in wrappers, not in the strategies or the driver (as NNI's middlewares or
Ray Tune's Searcher wrappers). Each wrapper may answer a proposal before it is evaluated (`screen`) and
hears every outcome (`record`):

- `BuildArchitecture`: builds the proposal's architecture graph; one that fails to build is a failed
  outcome (the candidate fails, not the search);
- `Constraints`: a proposal over a limit (parameters, multiply-accumulates) is *rejected*: its own
  kind of outcome, told to the strategy with `Strategy.reject`, never as a failure, and it uses no budget;
- `Deduplicate`: a proposal whose architecture was evaluated before is answered from that result
  (marked ``cached``); it uses a budget slot but no evaluation.

Failure handling of the result itself (`check_value`): an evaluation whose value is missing or not
finite is a failure. Pending tracking of the strategy's own asks is in `nas.strategies.base`; the loop
counts proposals in flight, so the budget is never over-committed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nas.space import Assignment
from nas.strategies.base import Strategy

OK, FAILED, REJECTED = "ok", "failed", "rejected"
MAX_REJECTIONS_IN_A_ROW = 2000


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
    """What came of a proposal: ``status`` "ok" (``value`` is the search metric), "failed" (``error``
    says why) or "rejected" (by a constraint, ``error`` says which; never evaluated). ``cached`` names the
    earlier evaluation an answer was taken from."""

    status: str
    value: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cached: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what the executor wants journaled with it

    @property
    def ok(self) -> bool:
        return self.status == OK


def check_value(outcome: Outcome, error: str = "the evaluation reported no finite value") -> Outcome:
    """Failure handling of a result: an ok outcome without a finite value becomes a failure (`error`)."""
    if outcome.ok and not (isinstance(outcome.value, int | float) and not isinstance(outcome.value, bool)
                           and math.isfinite(outcome.value)):
        return Outcome(FAILED, None, outcome.metrics, error, extra=outcome.extra)
    if outcome.ok:
        outcome.value = float(outcome.value)
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
    """Builds ``proposal.arch`` with `build(assignment)` and its `arch_id`; a build error fails it."""

    def __init__(self, build: Callable[[Assignment], Any]):
        self.build = build

    def screen(self, proposal: Proposal) -> Outcome | None:
        from nas.graph import arch_id

        try:
            proposal.arch = self.build(proposal.assignment)
            proposal.arch_id = arch_id(proposal.arch)
        except Exception as e:  # the candidate fails, not the search
            return Outcome(FAILED, error=f"{type(e).__name__}: {e}")
        return None

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        pass


class Constraints:
    """Rejects a built proposal over ``max_params`` parameters or ``max_flops`` multiply-accumulates per
    sample (None: no limit), before it is evaluated."""

    def __init__(self, max_params: int | None = None, max_flops: int | None = None):
        self.max_params, self.max_flops = max_params, max_flops

    def violation(self, arch: Any) -> str | None:
        """Why `arch` exceeds the limits, or None."""
        from nas.builder import count_flops, count_params

        if self.max_params is not None and (n := count_params(arch)) > self.max_params:
            return f"{n:,} parameters > max_params {self.max_params:,}"
        if self.max_flops is not None and (n := count_flops(arch)) > self.max_flops:
            return f"{n:,} multiply-accumulates > max_flops {self.max_flops:,}"
        return None

    def screen(self, proposal: Proposal) -> Outcome | None:
        why = None if proposal.arch is None else self.violation(proposal.arch)
        return None if why is None else Outcome(REJECTED, error=why)

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        pass


class Deduplicate:
    """Answers a proposal whose architecture (by `arch_id`) was evaluated successfully before with that
    result. ``first`` maps arch_id -> (value, metrics, tag, extra) of the first success."""

    def __init__(self, earlier: Iterable[tuple[str, float, dict[str, Any], str, dict[str, Any]]] = ()):
        self.first: dict[str, tuple[float, dict[str, Any], str, dict[str, Any]]] = {}
        for aid, value, metrics, tag, extra in earlier:
            self.first.setdefault(aid, (value, metrics, tag, extra))

    def screen(self, proposal: Proposal) -> Outcome | None:
        hit = self.first.get(proposal.arch_id) if proposal.arch_id else None
        if hit is None:
            return None
        value, metrics, tag, extra = hit
        return Outcome(OK, value, dict(metrics), cached=tag, extra=dict(extra))

    def record(self, proposal: Proposal, outcome: Outcome) -> None:
        if outcome.ok and proposal.arch_id and not outcome.cached:
            self.first.setdefault(proposal.arch_id, (outcome.value, outcome.metrics, proposal.tag, outcome.extra))


class AskTellLoop:
    """Asks `strategy` through `wrappers` (in order) until a proposal needs evaluating, within `budget`
    outcomes (None: no count limit; the executor stops). Outcomes settled by a wrapper (cached, failed to
    build) count toward the budget; rejections do not."""

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

    def remaining(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.n_done - self.in_flight, 0)

    def next(self, tag: str = "") -> Proposal | None:
        """The next proposal to evaluate, or None when the budget is committed."""
        in_a_row = 0
        while self.budget is None or self.n_done + self.in_flight < self.budget:
            proposal = Proposal(self.strategy.ask(), tag=tag)
            outcome = None
            for w in self.wrappers:
                outcome = w.screen(proposal)
                if outcome is not None:
                    break
            if outcome is None:
                self.in_flight += 1
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
        """The outcome of evaluating a proposal that `next` returned."""
        self.in_flight -= 1
        self._settle(proposal, outcome)

    def abandon(self, proposal: Proposal) -> None:
        """A proposal `next` returned that will not be evaluated (the executor stopped first)."""
        self.in_flight -= 1

    def _settle(self, proposal: Proposal, outcome: Outcome) -> None:
        self.n_done += 1
        if self.journal is not None:
            self.journal.record(proposal, outcome)
        self.strategy.tell(proposal.assignment, outcome.value if outcome.ok else None)
        for w in self.wrappers:
            w.record(proposal, outcome)
        if self.journal is not None:
            self.journal.told(proposal, outcome)


def run_in_process(loop: AskTellLoop, evaluate: Callable[[Proposal], Outcome],
                   stop: Callable[[Proposal, Outcome], bool] | None = None) -> None:
    """Execute `loop` here, one evaluation at a time, until the budget is committed or `stop(proposal,
    outcome)` says the outcome is past the end (it is then not told: it did not finish in time)."""
    while (proposal := loop.next()) is not None:
        outcome = evaluate(proposal)
        if stop is not None and stop(proposal, outcome):
            loop.abandon(proposal)
            return
        loop.finish(proposal, outcome)
