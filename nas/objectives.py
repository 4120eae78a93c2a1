"""What a search optimises and what it must respect: objectives (``val_accuracy:max``, ``params:min``) and
constraints (``flops<=3e8``), read from the metrics an evaluation reports.

One objective is a single-objective search, exactly as before this module existed: its value is a
number. Several objectives make a multi-objective search: each evaluation's value is the vector of its
objectives (in the order given), strategies search the Pareto front (`nas.pareto`), and the run folder
gets ``pareto.json`` / ``pareto.md`` / ``pareto.png``.

Metrics come from two places:

- known *before* evaluation, from the architecture alone (`PRE_EVALUATION`: ``params``, ``flops``; and
  ``latency_ms`` where a latency table is given, `nas.latency_table`): a constraint on one of them rejects
  a proposal before it is evaluated (no budget used), as ``--max-params`` does;
- reported by the evaluation (`nas.evaluation.Evaluation.reported_metrics`): a constraint on one of them is
  checked once the result is in; an evaluation that breaks it is journaled (``violates``) but is not
  feasible: it never enters the front, the best or the ranking, and the strategy is told it as a failure.

The test split is never used for selection, so a ``test_*`` metric can be neither an objective nor a
constraint. Every mistake (an unknown metric, one the evaluation does not report, contradictory
constraints, a malformed spec) is an `ObjectiveError` naming it, raised before any trial runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODES = ("max", "min")
PRE_EVALUATION = ("params", "flops")  # counted from the architecture graph (nas.builder), no evaluation needed
LATENCY = "latency_ms"
# the direction a bare metric name (no ":max" / ":min") is optimised in
DEFAULT_MODES = {"params": "min", "flops": "min", LATENCY: "min", "val_loss": "min", "train_loss": "min",
                 "simulated_seconds": "min", "train_seconds": "min"}
_MAXIMISED_SUFFIXES = ("accuracy", "miou", "map", "iou", "f1", "auc")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*([^\s]+)\s*$")
OPERATORS = ("<=", ">=", "<", ">")


class ObjectiveError(ValueError):
    """An objective or constraint cannot work; the message names it and what is wrong."""


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str = "max"

    def spec(self) -> str:
        return f"{self.metric}:{self.mode}"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def signed(self, value: float) -> float:
        """The value to maximise (a minimised metric negated)."""
        return value if self.mode == "max" else -value


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    bound: float

    def spec(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def holds(self, value: Any) -> bool:
        if not _finite(value):
            return False
        return {"<=": value <= self.bound, ">=": value >= self.bound, "<": value < self.bound,
                ">": value > self.bound}[self.op]


def default_mode(metric: str) -> str | None:
    """The usual direction of a metric given without ``:max`` / ``:min`` (None: it must be said)."""
    if metric in DEFAULT_MODES:
        return DEFAULT_MODES[metric]
    if metric.endswith(_MAXIMISED_SUFFIXES):
        return "max"
    return None


def parse_objective(text: Any) -> Objective:
    """``metric:max`` / ``metric:min``, or a bare metric whose direction is known (`default_mode`)."""
    if isinstance(text, Objective):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ObjectiveError(f"objective {text!r}: give METRIC:max or METRIC:min, e.g. val_accuracy:max")
    metric, sep, mode = text.strip().partition(":")
    metric, mode = metric.strip(), mode.strip().lower()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", metric):
        raise ObjectiveError(f"objective {text!r}: {metric!r} is not a metric name; give METRIC:max or METRIC:min")
    if not sep:
        mode = default_mode(metric) or ""
        if not mode:
            raise ObjectiveError(f"objective {text!r}: say whether to maximise or minimise it ({metric}:max or "
                                 f"{metric}:min)")
    if mode not in MODES:
        raise ObjectiveError(f"objective {text!r}: the direction must be max or min, got {mode!r}")
    return Objective(metric, mode)


def parse_constraint(text: Any) -> Constraint:
    """``metric<=bound`` (also ``>=``, ``<``, ``>``); the bound is a number (``3e8``, ``300000``)."""
    if isinstance(text, Constraint):
        return text
    m = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if m is None:
        raise ObjectiveError(f"constraint {text!r}: give METRIC<=BOUND (or >=, <, >), e.g. flops<=3e8")
    metric, op, bound = m.groups()
    try:
        value = float(bound)
    except ValueError:
        raise ObjectiveError(f"constraint {text!r}: the bound {bound!r} is not a number") from None
    if not math.isfinite(value):
        raise ObjectiveError(f"constraint {text!r}: the bound must be finite")
    return Constraint(metric, op, value)


def parse_objectives(items: Iterable[Any]) -> list[Objective]:
    out = [parse_objective(t) for t in items]
    seen: dict[str, Objective] = {}
    for o in out:
        if o.metric in seen:
            raise ObjectiveError(f"objective {o.metric!r} is given twice ({seen[o.metric].spec()}, {o.spec()})")
        seen[o.metric] = o
    return out


def parse_constraints(items: Iterable[Any]) -> list[Constraint]:
    out = [parse_constraint(t) for t in items]
    check_consistent(out)
    return out


def size_constraints(max_params: int | None, max_flops: int | None) -> list[Constraint]:
    """``--max-params`` / ``--max-flops`` as constraints."""
    out = []
    if max_params is not None:
        out.append(Constraint("params", "<=", float(max_params)))
    if max_flops is not None:
        out.append(Constraint("flops", "<=", float(max_flops)))
    return out


def check_consistent(constraints: Sequence[Constraint]) -> None:
    """Raise `ObjectiveError` where the constraints on one metric leave no value that meets them all."""
    by_metric: dict[str, list[Constraint]] = {}
    for c in constraints:
        by_metric.setdefault(c.metric, []).append(c)
    for metric, cs in by_metric.items():
        lows = [c for c in cs if c.op in (">=", ">")]
        highs = [c for c in cs if c.op in ("<=", "<")]
        for lo in lows:
            for hi in highs:
                strict = lo.op == ">" or hi.op == "<"
                if lo.bound > hi.bound or (strict and lo.bound == hi.bound):
                    raise ObjectiveError(f"constraints {lo.spec()} and {hi.spec()} contradict each other: no value "
                                         f"of {metric} meets both")


def check_metrics(objectives: Sequence[Objective], constraints: Sequence[Constraint], available: Iterable[str],
                  what: str) -> None:
    """Raise `ObjectiveError` unless every objective and constraint reads a metric in `available` (what the
    evaluation `what` reports, plus those known before evaluation), and none reads the test split."""
    available = set(available)
    for kind, items in (("objective", objectives), ("constraint", constraints)):
        for o in items:
            if o.metric.startswith("test_"):
                raise ObjectiveError(f"{kind} {o.spec()}: the test split is never used for selection (it is only "
                                     "reported); use a validation metric")
            if o.metric not in available:
                hint = ""
                if o.metric == LATENCY:
                    hint = ("; latency is measured by a training evaluation with --latency-reps > 0, or read from a "
                            "table of measured latencies (--latency-table FILE)")
                raise ObjectiveError(f"{kind} {o.spec()}: {what} does not report {o.metric!r}; metrics available: "
                                     f"{', '.join(sorted(available))}{hint}")


def search_objectives(cfg: Any, evaluation: Any, check: bool = True) -> tuple[list[Objective], list[Constraint]]:
    """A search's objectives (its ``objectives``, else the evaluation's `default_objective`) and constraints
    (its ``constraints``; ``max_params`` / ``max_flops`` stay the loop's own limits). With `check`, each
    must read a metric the evaluation reports or one known before evaluation, and a reference point must
    name objectives of a multi-objective search: else `ObjectiveError`, before any trial runs."""
    objectives = parse_objectives(cfg.objectives) or [parse_objective(evaluation.default_objective)]
    constraints = parse_constraints(cfg.constraints)
    if check:
        known = set(PRE_EVALUATION) | ({LATENCY} if getattr(cfg, "latency_table", None) else set())
        check_metrics(objectives, constraints, set(evaluation.reported_metrics()) | known,
                      f"the {evaluation.kind} evaluation ({evaluation.describe()})")
        given = getattr(cfg, "reference_point", None) or {}
        if given and len(objectives) < 2:
            raise ObjectiveError(f"reference_point {given}: a hypervolume needs two or more objectives; this search "
                                 f"has one ({objectives[0].spec()})")
        extra = sorted(set(given) - {o.metric for o in objectives})
        if extra:
            raise ObjectiveError(f"reference_point names {extra}, which are not objectives "
                                 f"({', '.join(o.spec() for o in objectives)})")
    return objectives, constraints


def pre_evaluation(constraints: Sequence[Constraint], latency_table: bool) -> tuple[list[Constraint], list[Constraint]]:
    """(constraints on metrics known before evaluation, the others): the first reject proposals unevaluated."""
    known = set(PRE_EVALUATION) | ({LATENCY} if latency_table else set())
    return [c for c in constraints if c.metric in known], [c for c in constraints if c.metric not in known]


def objective_values(objectives: Sequence[Objective], metrics: Mapping[str, Any]) -> list[float | None]:
    """Each objective's value in `metrics` (None where missing or not finite)."""
    return [float(metrics[o.metric]) if _finite(metrics.get(o.metric)) else None for o in objectives]


def violations(constraints: Sequence[Constraint], metrics: Mapping[str, Any]) -> list[str]:
    """The constraints of `constraints` whose metric is in `metrics` and which it breaks, as readable text."""
    out = []
    for c in constraints:
        if c.metric in metrics and not c.holds(metrics[c.metric]):
            v = metrics[c.metric]
            shown = f"{v:,.6g}" if _finite(v) else repr(v)
            out.append(f"{c.metric} {shown} breaks {c.spec()}")
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


__all__ = ["DEFAULT_MODES", "LATENCY", "MODES", "PRE_EVALUATION", "Constraint", "Objective", "ObjectiveError",
           "check_consistent", "check_metrics", "default_mode", "objective_values", "parse_constraint",
           "parse_constraints", "parse_objective", "parse_objectives", "pre_evaluation", "search_objectives",
           "size_constraints", "violations"]
