"""The architecture graph: the one currency between search spaces, strategies, builder and export.

An `ArchGraph` is a `networkx.DiGraph` of concrete operations. Each node carries plain data:

- ``op``: a name from `nas.ops.OPS` (``input`` for the single input node);
- ``params``: the op's hyperparameters (a JSON-able dict);
- ``merge``: how a node with several inputs combines them before its op (sum, concat, gate, mul);
- ``choice`` (optional): the name of the op-choice variable that decides this node's op, which is what
  DARTS relaxes;
- ``aux`` (optional, true on auxiliary-head nodes): nodes that feed a side output used only in training.

Edges carry ``order``, the input's position among its target's inputs (concat and gate care). Graph
attributes: ``input_shape`` (without batch), and free-form metadata (``space``, ``assignment``, ...) that
is saved with the graph but is not part of its identity.

Node ids are Python identifiers so that the builder and the exported module can use them as submodule
names: ``state_dict`` keys are ``<node id>.weight`` everywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx

from nas.ops import OpError, Shape, get_op, merge_shape, resolve_params

FORMAT = "graphnas.arch/1"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ArchitectureError(ValueError):
    """An architecture graph is invalid; the message names the node or edge at fault."""


class ArchGraph(nx.DiGraph):
    """A DiGraph with a few helpers to write architectures node by node."""

    def __init__(self, input_shape: Iterable[int] | None = None, **attrs: Any):
        super().__init__()
        if input_shape is not None:
            self.graph["input_shape"] = [int(v) for v in input_shape]
            self.add_node("input", op="input", params={})
        self.graph.update(attrs)

    def add_op(self, node: str, op: str, inputs: str | list[str], merge: str | None = None,
               choice: str | None = None, aux: bool = False, **params: Any) -> str:
        """Add node `node` computing `op(merge(inputs))`; returns `node` so calls chain."""
        if node in self:
            raise ArchitectureError(f"node {node!r} already exists")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        attrs: dict[str, Any] = {"op": op, "params": params}
        if merge is not None:
            attrs["merge"] = merge
        if choice is not None:
            attrs["choice"] = choice
        if aux:
            attrs["aux"] = True
        self.add_node(node, **attrs)
        for i, src in enumerate(inputs):
            if src not in self:
                raise ArchitectureError(f"node {node!r}: input {src!r} does not exist")
            self.add_edge(src, node, order=i)
        return node

    # conveniences that read like the module-level functions
    def validate(self) -> dict[str, Shape]:
        return infer_shapes(self)

    def arch_id(self) -> str:
        return arch_id(self)

    def to_json(self, **kw: Any) -> str:
        return to_json(self, **kw)

    @property
    def input_node(self) -> str:
        return input_node(self)

    @property
    def output_node(self) -> str:
        return output_node(self)


# ---------------------------------------------------------------------------------------------------
# structure


def ordered_inputs(g: nx.DiGraph, node: str) -> list[str]:
    preds = list(g.predecessors(node))
    return sorted(preds, key=lambda p: (g.edges[p, node].get("order", 0), p))


def input_node(g: nx.DiGraph) -> str:
    nodes = [n for n, d in g.nodes(data=True) if d.get("op") == "input"]
    if len(nodes) != 1:
        raise ArchitectureError(f"an architecture needs exactly one 'input' node, found {len(nodes)}: {nodes}")
    return nodes[0]


def aux_nodes(g: nx.DiGraph) -> set[str]:
    return {n for n, d in g.nodes(data=True) if d.get("aux")}


def aux_outputs(g: nx.DiGraph) -> list[str]:
    """Sinks of auxiliary heads (side outputs used only in training), in node order."""
    aux = aux_nodes(g)
    return [n for n in g.nodes if n in aux and g.out_degree(n) == 0]


def output_node(g: nx.DiGraph) -> str:
    aux = aux_nodes(g)
    sinks = [n for n in g.nodes if g.out_degree(n) == 0 and n not in aux]
    if len(sinks) != 1:
        raise ArchitectureError(f"an architecture needs exactly one output node (a non-auxiliary node "
                                f"with no successor), found {len(sinks)}: {sinks[:10]}")
    return sinks[0]


def infer_shapes(g: nx.DiGraph) -> dict[str, Shape]:
    """Validate `g` and return every node's output shape (batch dimension excluded).

    Checks: node ids are identifiers, the graph is acyclic with one input and one output, every node
    is on a path from the input, ops and merges are known, hyperparameters are complete, and shapes
    agree along every edge. Raises `ArchitectureError` naming the node or edge at fault.
    """
    if not isinstance(g, nx.DiGraph) or g.is_multigraph():
        raise ArchitectureError("an architecture must be a networkx.DiGraph")
    if "input_shape" not in g.graph:
        raise ArchitectureError("the graph has no 'input_shape' attribute")
    in_shape = g.graph["input_shape"]
    if not (isinstance(in_shape, list | tuple) and in_shape
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in in_shape)):
        raise ArchitectureError(f"input_shape must be a list of positive ints, got {in_shape!r}")
    for n in g.nodes:
        if not isinstance(n, str) or not _IDENT.match(n):
            raise ArchitectureError(f"node id {n!r} is not a Python identifier")
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        raise ArchitectureError(f"the graph has a cycle through edges {cycle}")
    src = input_node(g)
    if g.in_degree(src) != 0:
        raise ArchitectureError(f"input node {src!r} has incoming edges")
    output_node(g)
    reachable = nx.descendants(g, src) | {src}
    unreachable = [n for n in g.nodes if n not in reachable]
    if unreachable:
        raise ArchitectureError(f"node(s) {unreachable[:10]} are not reachable from the input")

    shapes: dict[str, Shape] = {}
    for n in nx.lexicographical_topological_sort(g):
        data = g.nodes[n]
        if n == src:
            shapes[n] = tuple(in_shape)
            continue
        op = data.get("op")
        if not isinstance(op, str):
            raise ArchitectureError(f"node {n!r} has no 'op'")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise ArchitectureError(f"node {n!r}: params must be a dict, got {type(params).__name__}")
        preds = ordered_inputs(g, n)
        orders = sorted(g.edges[p, n].get("order", 0) for p in preds)
        if orders != list(range(len(preds))):
            raise ArchitectureError(f"node {n!r}: input edges must carry orders 0..{len(preds) - 1}, "
                                    f"got {orders}")
        merge = data.get("merge")
        try:
            if len(preds) > 1:
                if merge is None:
                    raise OpError(f"it has {len(preds)} inputs {preds} but no 'merge'")
                x = merge_shape(merge, [shapes[p] for p in preds], "merging its inputs")
            else:
                if merge is not None:
                    raise OpError(f"it has merge {merge!r} but only one input")
                x = shapes[preds[0]]
            shapes[n] = tuple(get_op(op).shape(resolve_params(op, params), x))
        except OpError as e:
            edges = ", ".join(f"{p}->{n}" for p in preds)
            raise ArchitectureError(f"node {n!r} (op {op!r}, input edges {edges}): {e}") from None
        except (TypeError, KeyError) as e:
            raise ArchitectureError(f"node {n!r} (op {op!r}): bad parameters {params}: {e!r}") from None
    return shapes


def topological_order(g: nx.DiGraph) -> list[str]:
    """A deterministic topological order (ties broken by node id)."""
    return list(nx.lexicographical_topological_sort(g))


# ---------------------------------------------------------------------------------------------------
# identity


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    return value


def arch_id(g: nx.DiGraph) -> str:
    """Canonical hash: equal for two spellings of one network (node names, insertion order, the
    order of a commutative merge's inputs, default hyperparameters written out or not).

    A Merkle hash over the DAG: each node hashes its op, full hyperparameters, merge, out-degree and
    its inputs' hashes (sorted for sum and mul, in order for concat and gate). The out-degree keeps a
    shared node apart from two equal copies. Metadata (space, assignment) is not part of the identity.
    """
    infer_shapes(g)
    h: dict[str, str] = {}
    for n in topological_order(g):
        d = g.nodes[n]
        op = d["op"]
        params = {} if op == "input" else resolve_params(op, d.get("params", {}))
        ins = [h[p] for p in ordered_inputs(g, n)]
        if d.get("merge") in ("sum", "mul"):
            ins.sort()
        label = json.dumps([op, _canonical(params), d.get("merge"), bool(d.get("aux")), g.out_degree(n), ins],
                           sort_keys=True)
        h[n] = hashlib.sha256(label.encode()).hexdigest()
    sinks = sorted(h[n] for n in g.nodes if g.out_degree(n) == 0)
    top = json.dumps([list(g.graph["input_shape"]), sinks])
    return hashlib.sha256(top.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# JSON (node-link form, readable by networkx.node_link_graph(..., edges="edges"))


def to_dict(g: nx.DiGraph) -> dict:
    nodes = []
    for n in topological_order(g):
        d = g.nodes[n]
        entry = {"id": n, "op": d["op"], "params": _canonical(d.get("params", {}))}
        for key in ("merge", "choice", "aux"):
            if d.get(key) is not None:
                entry[key] = d[key]
        nodes.append(entry)
    position = {n["id"]: i for i, n in enumerate(nodes)}
    edges = sorted(
        ({"source": u, "target": v, "order": int(d.get("order", 0))} for u, v, d in g.edges(data=True)),
        key=lambda e: (position[e["target"]], e["order"]),
    )
    graph = {k: _canonical(v) for k, v in sorted(g.graph.items())}
    return {"format": FORMAT, "directed": True, "multigraph": False, "graph": graph,
            "nodes": nodes, "edges": edges}


def from_dict(data: Any, where: str = "architecture") -> ArchGraph:
    """Rebuild and validate an architecture from `to_dict` output; errors name `where` and the field."""
    if not isinstance(data, dict):
        raise ArchitectureError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ArchitectureError(f"{where}: 'format' must be {FORMAT!r}, got {data.get('format')!r}")
    for key, typ in (("graph", dict), ("nodes", list), ("edges", list)):
        if not isinstance(data.get(key), typ):
            raise ArchitectureError(f"{where}: field {key!r} must be a {typ.__name__}")
    g = ArchGraph()
    g.graph.update(data["graph"])
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str) or "op" not in node:
            raise ArchitectureError(f"{where}: nodes[{i}] needs string 'id' and 'op'")
        extra = set(node) - {"id", "op", "params", "merge", "choice", "aux"}
        if extra:
            raise ArchitectureError(f"{where}: nodes[{i}] ({node['id']!r}) has unknown field(s) {sorted(extra)}")
        if node["id"] in g:
            raise ArchitectureError(f"{where}: node id {node['id']!r} appears twice")
        attrs = {k: v for k, v in node.items() if k != "id"}
        attrs.setdefault("params", {})
        g.add_node(node["id"], **attrs)
    for i, e in enumerate(data["edges"]):
        if not isinstance(e, dict) or e.get("source") not in g or e.get("target") not in g:
            raise ArchitectureError(f"{where}: edges[{i}] must join two existing nodes, got {e!r}")
        if g.has_edge(e["source"], e["target"]):
            raise ArchitectureError(f"{where}: edge {e['source']}->{e['target']} appears twice")
        g.add_edge(e["source"], e["target"], order=e.get("order", 0))
    try:
        infer_shapes(g)
    except ArchitectureError as err:
        raise ArchitectureError(f"{where}: {err}") from None
    return g


def to_json(g: nx.DiGraph, indent: int | None = 1) -> str:
    infer_shapes(g)
    return json.dumps(to_dict(g), indent=indent, sort_keys=False)


def from_json(text: str, where: str = "architecture JSON") -> ArchGraph:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArchitectureError(f"{where}: malformed JSON: {e}") from None
    return from_dict(data, where)


def save(g: nx.DiGraph, path: str | Path) -> Path:
    from nas.io import atomic_write_text

    return atomic_write_text(path, to_json(g))


def load(path: str | Path) -> ArchGraph:
    """Load an architecture JSON file (a plain graph, or a `best.json` that holds one under 'arch')."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArchitectureError(f"{path}: malformed JSON: {e}") from None
    if isinstance(data, dict) and "arch" in data and "format" not in data:
        data = data["arch"]
    return from_dict(data, str(path))
