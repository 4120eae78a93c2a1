"""Search spaces: a fixed, ordered list of choice variables and a function from an assignment to an
architecture graph.

Fixed dimensionality is what lets every strategy share every space: depth and width are ordinal
variables, an op is a categorical one. A categorical variable with ``op_choice=True`` decides the op of
exactly one node (the node the space marks with ``choice=<variable name>``), and every alternative has
the same input and output shape there: those are the variables DARTS relaxes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from nas.graph import ArchGraph, ArchitectureError, infer_shapes

Value = str | int | float | bool
Assignment = dict[str, Any]


class SpaceError(ValueError):
    """A search space or an assignment is invalid; the message names the variable at fault."""


def _check_domain(name: str, values: Iterable[Any]) -> tuple:
    if not isinstance(name, str) or not name.isidentifier():
        raise SpaceError(f"variable name {name!r} must be a Python identifier")
    values = tuple(values)
    if len(values) < 1:
        raise SpaceError(f"variable {name!r} has an empty domain")
    for v in values:
        if not isinstance(v, str | int | float | bool):
            raise SpaceError(f"variable {name!r}: value {v!r} is not a str, int, float or bool")
    if len(set(map(repr, values))) != len(values):
        raise SpaceError(f"variable {name!r} lists a value twice: {values}")
    return values


@dataclass(frozen=True)
class _Variable:
    name: str
    values: tuple
    default: Any = None

    kind = "variable"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _check_domain(self.name, self.values))
        if self.default is None:
            object.__setattr__(self, "default", self.values[0])
        elif not self.contains(self.default):
            raise SpaceError(f"variable {self.name!r}: default {self.default!r} is not in its domain {self.values}")

    def __len__(self) -> int:
        return len(self.values)

    def contains(self, value: Any) -> bool:
        return any(type(v) is type(value) and v == value for v in self.values) or (
            not isinstance(value, bool) and isinstance(value, int | float)
            and any(not isinstance(v, bool) and isinstance(v, int | float) and v == value for v in self.values)
        )

    def index(self, value: Any) -> int:
        for i, v in enumerate(self.values):
            if v == value and isinstance(v, bool) == isinstance(value, bool):
                return i
        raise SpaceError(f"variable {self.name!r}: value {value!r} is not in its domain {list(self.values)}")

    def parse(self, text: str) -> Any:
        """The domain value whose string form is `text` (for command lines)."""
        for v in self.values:
            if str(v) == text or (isinstance(v, bool) and text.lower() == str(v).lower()):
                return v
        raise SpaceError(f"variable {self.name!r}: {text!r} is not one of {[str(v) for v in self.values]}")

    def neighbours(self, value: Any) -> list[Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Categorical(_Variable):
    """An unordered choice: every other value is one step away (a complete graph)."""

    op_choice: bool = False
    kind = "categorical"

    def neighbours(self, value: Any) -> list[Any]:
        i = self.index(value)
        return [v for j, v in enumerate(self.values) if j != i]


@dataclass(frozen=True)
class Ordinal(_Variable):
    """An ordered choice (depth, width, kernel size): neighbours are the adjacent values (a path graph)."""

    kind = "ordinal"

    def neighbours(self, value: Any) -> list[Any]:
        i = self.index(value)
        return [self.values[j] for j in (i - 1, i + 1) if 0 <= j < len(self.values)]


Variable = Categorical | Ordinal


@dataclass(frozen=True)
class Preset:
    """A named point of a space: an assignment (over the defaults) plus the options and the data shape
    the canonical network was published with."""

    assignment: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    description: str = ""


BuildFn = Callable[..., nx.DiGraph]


@dataclass
class SearchSpace:
    """`build(assignment, num_classes=..., input_shape=..., **options) -> ArchGraph`.

    ``relaxation``: for a space whose nodes choose their inputs, a zero-argument factory of the
    `nas.relaxation.Relaxation` that says how DARTS-style strategies relax those choices (called only
    when one asks); None for spaces whose op choices relax on their own.

    ``task``: what the networks' output is for (`nas.tasks`): ``classification`` (num_classes scores; also
    what a ``multilabel`` task reads), ``contrastive`` (a pair's two embeddings), ``segmentation`` (scores per
    pixel) or ``detection`` (scores and box deltas per proposal).
    """

    name: str
    variables: list[Variable]
    build: BuildFn
    presets: dict[str, Preset] = field(default_factory=dict)
    input_shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    relaxation: Callable[[], Any] | None = field(default=None, repr=False)  # -> nas.relaxation.Relaxation
    task: str = "classification"

    def __post_init__(self) -> None:
        names = [v.name for v in self.variables]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SpaceError(f"space {self.name!r}: variable(s) {sorted(dup)} declared twice")
        self._by_name = {v.name: v for v in self.variables}
        for pname, preset in self.presets.items():
            try:
                self.complete(preset.assignment)
                self._check_options(preset.options)
            except SpaceError as e:
                raise SpaceError(f"space {self.name!r}, preset {pname!r}: {e}") from None

    # -- variables -----------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    @property
    def op_choices(self) -> list[Categorical]:
        return [v for v in self.variables if isinstance(v, Categorical) and v.op_choice]

    def variable(self, name: str) -> Variable:
        try:
            return self._by_name[name]
        except KeyError:
            raise SpaceError(f"space {self.name!r} has no variable {name!r}; it has {self.names}") from None

    def size(self) -> int:
        return math.prod(len(v) for v in self.variables)

    def defaults(self) -> Assignment:
        return {v.name: v.default for v in self.variables}

    def complete(self, partial: Mapping[str, Any]) -> Assignment:
        """Defaults overridden by `partial`, every value checked against its domain."""
        out = self.defaults()
        for name, value in partial.items():
            var = self.variable(name)
            if not var.contains(value):
                raise SpaceError(f"variable {name!r}: value {value!r} is not in its domain {list(var.values)}")
            out[name] = var.values[var.index(value)]
        return out

    def validate(self, assignment: Mapping[str, Any]) -> Assignment:
        """A full assignment: every variable present, no unknown name, every value in its domain."""
        if not isinstance(assignment, Mapping):
            raise SpaceError(f"an assignment must be a dict of variable -> value, got {type(assignment).__name__}")
        missing = [n for n in self.names if n not in assignment]
        if missing:
            raise SpaceError(f"space {self.name!r}: assignment lacks variable(s) {missing}")
        return self.complete(assignment)

    def sample(self, rng: random.Random) -> Assignment:
        return {v.name: rng.choice(v.values) for v in self.variables}

    def preset(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            raise SpaceError(f"space {self.name!r} has no preset {name!r}; presets: {sorted(self.presets)}") from None

    def _check_options(self, options: Mapping[str, Any]) -> None:
        unknown = set(options) - set(self.options)
        if unknown:
            raise SpaceError(f"space {self.name!r} has no option(s) {sorted(unknown)}; options: {sorted(self.options)}")

    # -- architectures -------------------------------------------------------------------------------
    def graph(self, assignment: Mapping[str, Any] | None = None, *, preset: str | None = None,
              num_classes: int | None = None, input_shape: Iterable[int] | None = None,
              partial: bool = False, **options: Any) -> ArchGraph:
        """The architecture of `assignment` (over `preset`, if given), validated and shape-checked.

        With ``partial=True`` unassigned variables take their defaults; otherwise every variable must
        be assigned (a preset counts as assigning all).
        """
        base: dict[str, Any] = {}
        opts = dict(self.options)
        if preset is not None:
            p = self.preset(preset)
            base = dict(p.assignment)
            opts.update(p.options)
            num_classes = num_classes if num_classes is not None else p.num_classes
            input_shape = input_shape if input_shape is not None else p.input_shape
            partial = True
        self._check_options(options)
        opts.update(options)
        merged = {**base, **(assignment or {})}
        full = self.complete(merged) if partial else self.validate(merged)
        n_cls = int(num_classes if num_classes is not None else self.num_classes)
        shape = tuple(int(v) for v in (input_shape if input_shape is not None else self.input_shape))
        g = self.build(dict(full), num_classes=n_cls, input_shape=shape, **opts)
        if not isinstance(g, nx.DiGraph):
            raise SpaceError(f"space {self.name!r}: build returned {type(g).__name__}, not an ArchGraph")
        infer_shapes(g)
        self._check_choice_nodes(g)
        g.graph.update({"space": self.name, "assignment": full, "num_classes": n_cls})
        if preset is not None:
            g.graph["preset"] = preset
        if opts:
            g.graph["options"] = opts
        return g

    def _check_choice_nodes(self, g: nx.DiGraph) -> None:
        marked: dict[str, list[str]] = {}
        for n, d in g.nodes(data=True):
            if d.get("choice") is not None:
                marked.setdefault(d["choice"], []).append(n)
        for var in self.op_choices:
            nodes = marked.pop(var.name, [])
            if len(nodes) != 1:
                raise ArchitectureError(f"space {self.name!r}: op-choice variable {var.name!r} must mark exactly "
                                        f"one node with choice={var.name!r}, found {nodes}")
        if marked:
            raise ArchitectureError(f"space {self.name!r}: node(s) marked with choice {sorted(marked)} that are "
                                    "not op-choice variables of the space")


def as_space(space_or_variables: SearchSpace | Iterable[Variable], name: str = "variables") -> SearchSpace:
    """A space from a plain list of variables (for black-box use of the strategies)."""
    if isinstance(space_or_variables, SearchSpace):
        return space_or_variables
    variables = list(space_or_variables)
    for v in variables:
        if not isinstance(v, Categorical | Ordinal):
            raise SpaceError(f"expected nas.Categorical or nas.Ordinal variables, got {v!r}")

    def no_graph(assignment: Assignment, **_: Any) -> nx.DiGraph:
        raise SpaceError(f"space {name!r} is a plain list of variables; it has no architecture")

    return SearchSpace(name, variables, no_graph)
