"""The architecture graph: the one currency between search spaces, strategies, builder and export.

An `ArchGraph` is a `networkx.DiGraph` of concrete operations. Each node carries plain data:

- ``op``: a name from `nas.ops.OPS` (``input`` for an input node; ``call`` for a node applying a subgraph);
- ``params``: the op's hyperparameters (a JSON-able dict);
- ``merge``: how a node with several inputs combines them before its op (sum, concat, gate, mul);
- ``choice`` (optional): the name of the op-choice variable that decides this node's op, which is what
  DARTS relaxes;
- ``aux`` (optional, true on auxiliary-head nodes): nodes that feed a side output used only in training.

Edges carry ``order``, the input's position among its target's inputs (concat, gate and ops of arity > 1
care). Graph attributes: ``input_shape`` (without batch), ``subgraphs`` (below), and free-form metadata
(``space``, ``assignment``, ...) that is saved with the graph but is not part of its identity.

Several inputs (a Siamese pair, an image and its box proposals): the first input is the node ``input``
(params ``{}``, shape ``input_shape``); each further one is a node with op ``input`` and params
``{"index": k, "shape": [...]}``, k = 1, 2, ... (`ArchGraph.add_input`). A network built from such a
graph takes its inputs as positional arguments in index order. A step that handles only single-input
networks raises, naming the inputs (`input_node`).

Weight sharing: ``subgraphs`` maps a name to a single-input architecture (`to_dict` form); every node
with op ``call`` and params ``{"graph": name}`` applies that subgraph to its input, and all of them share
one module (built once, applied at each call: the branches of a Siamese network). Its weights are under
``<name>.`` in the state dict. Subgraphs hold no subgraphs of their own and no auxiliary heads.

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

from nas.ops import OpError, OpSpec, Shape, get_op, merge_shape, register_op, resolve_params

FORMAT = "graphnas.arch/1"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CALL_OP = "call"
SUBGRAPHS = "subgraphs"  # the graph attribute holding them


def _resolved_by_the_graph(*_: Any) -> Any:
    raise OpError("op 'call' applies a subgraph of its architecture; only the graph can resolve it")


register_op(OpSpec(CALL_OP, _resolved_by_the_graph, _resolved_by_the_graph, required=("graph",),
                   doc="apply the architecture's subgraph params['graph'] (one module, shared by every call)"))


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

    def add_input(self, node: str, shape: Iterable[int]) -> str:
        """Add the next input (index 1, 2, ...; the first is ``input``) of `shape` (without batch)."""
        if node in self:
            raise ArchitectureError(f"node {node!r} already exists")
        index = sum(1 for _, d in self.nodes(data=True) if d.get("op") == "input")
        self.add_node(node, op="input", params={"index": index, "shape": [int(v) for v in shape]})
        return node

    def add_subgraph(self, name: str, sub: nx.DiGraph) -> str:
        """Hold the single-input architecture `sub` as subgraph `name`; nodes ``add_op(n, "call", x,
        graph=name)`` apply it, sharing its weights. Returns `name`."""
        if not isinstance(name, str) or not _IDENT.match(name):
            raise ArchitectureError(f"subgraph name {name!r} is not a Python identifier")
        subs = self.graph.setdefault(SUBGRAPHS, {})
        if name in subs or name in self:
            raise ArchitectureError(f"subgraph name {name!r} is taken (by a subgraph or a node)")
        if sub.graph.get(SUBGRAPHS):
            raise ArchitectureError(f"subgraph {name!r} holds subgraphs of its own; nest them into one level")
        _one_input(sub, name)
        subs[name] = to_dict(sub)
        return name

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


def input_nodes(g: nx.DiGraph) -> list[str]:
    """The input nodes in index order (the first has params ``{}``, the k-th ``{"index": k, "shape": ...}``)."""
    nodes = [n for n, d in g.nodes(data=True) if d.get("op") == "input"]
    if not nodes:
        raise ArchitectureError("an architecture needs an 'input' node, found none")
    by_index: dict[int, str] = {}
    for n in nodes:
        params = g.nodes[n].get("params") or {}
        index = params.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ArchitectureError(f"input node {n!r}: params.index must be an int >= 0, got {index!r}")
        if index == 0 and params:
            raise ArchitectureError(f"input node {n!r}: the first input takes no params (its shape is the graph's "
                                    f"input_shape), got {params}")
        if index > 0:
            shape = params.get("shape")
            if set(params) != {"index", "shape"} or not _positive_ints(shape):
                raise ArchitectureError(f"input node {n!r}: a further input needs params {{'index': k, 'shape': "
                                        f"[positive ints]}}, got {params}")
        if index in by_index:
            raise ArchitectureError(f"input nodes {by_index[index]!r} and {n!r} both have index {index}")
        by_index[index] = n
    if sorted(by_index) != list(range(len(nodes))):
        raise ArchitectureError(f"input indices must be 0..{len(nodes) - 1}, got {sorted(by_index)}")
    return [by_index[i] for i in range(len(nodes))]


def input_node(g: nx.DiGraph) -> str:
    """The one input node; raises for a graph with several inputs (a step that takes only one)."""
    nodes = input_nodes(g)
    if len(nodes) != 1:
        raise ArchitectureError(f"this step takes architectures with one input; this one has {len(nodes)}: {nodes}")
    return nodes[0]


def input_shapes(g: nx.DiGraph) -> list[Shape]:
    """The shape (without batch) of every input, in index order."""
    out = []
    for n in input_nodes(g):
        params = g.nodes[n].get("params") or {}
        out.append(tuple(params["shape"]) if params.get("index") else tuple(g.graph["input_shape"]))
    return out


def _positive_ints(shape: Any) -> bool:
    return bool(isinstance(shape, list | tuple) and shape
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape))


def subgraphs(g: nx.DiGraph) -> dict[str, ArchGraph]:
    """The graph's subgraphs by name, each parsed and validated (a single-input architecture)."""
    raw = g.graph.get(SUBGRAPHS) or {}
    if not isinstance(raw, dict):
        raise ArchitectureError(f"graph attribute {SUBGRAPHS!r} must map names to architectures")
    out = {}
    for name, data in raw.items():
        if not isinstance(name, str) or not _IDENT.match(name):
            raise ArchitectureError(f"subgraph name {name!r} is not a Python identifier")
        if name in g:
            raise ArchitectureError(f"subgraph name {name!r} is also a node id; rename one")
        if isinstance(data, dict) and (data.get("graph") or {}).get(SUBGRAPHS):
            raise ArchitectureError(f"subgraph {name!r} holds subgraphs of its own; nest them into one level")
        sub = from_dict(data, f"subgraph {name!r}")
        _one_input(sub, name)
        if aux_nodes(sub):
            raise ArchitectureError(f"subgraph {name!r} has auxiliary nodes {sorted(aux_nodes(sub))[:5]}; a "
                                    "subgraph gives one output")
        out[name] = sub
    return out


def _one_input(sub: nx.DiGraph, name: str) -> None:
    inputs = input_nodes(sub)
    if len(inputs) != 1:
        raise ArchitectureError(f"subgraph {name!r} must have one input; it has {len(inputs)}: {inputs}")


def calls(g: nx.DiGraph) -> dict[str, str]:
    """node -> subgraph name of every ``call`` node."""
    return {n: (d.get("params") or {}).get("graph") for n, d in g.nodes(data=True) if d.get("op") == CALL_OP}


def node_input_shape(g: nx.DiGraph, n: str, shapes: dict[str, Shape]) -> Shape | tuple[Shape, ...]:
    """What node `n`'s op receives: its one input's shape, its inputs' merged shape, or (an op of arity
    > 1) the tuple of its inputs' shapes. Raises `OpError` where the inputs do not fit the node."""
    d = g.nodes[n]
    preds = ordered_inputs(g, n)
    merge = d.get("merge")
    arity = get_op(d["op"]).arity
    if arity > 1:
        if len(preds) != arity or merge is not None:
            raise OpError(f"it takes {arity} inputs as separate arguments (no merge), got {len(preds)} input(s) "
                          f"{preds}" + (f" and merge {merge!r}" if merge is not None else ""))
        return tuple(shapes[p] for p in preds)
    if len(preds) > 1:
        if merge is None:
            raise OpError(f"it has {len(preds)} inputs {preds} but no 'merge'")
        return merge_shape(merge, [shapes[p] for p in preds], "merging its inputs")
    if merge is not None:
        raise OpError(f"it has merge {merge!r} but only one input")
    return shapes[preds[0]]


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
    if not _positive_ints(in_shape):
        raise ArchitectureError(f"input_shape must be a list of positive ints, got {in_shape!r}")
    for n in g.nodes:
        if not isinstance(n, str) or not _IDENT.match(n):
            raise ArchitectureError(f"node id {n!r} is not a Python identifier")
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        raise ArchitectureError(f"the graph has a cycle through edges {cycle}")
    srcs = input_nodes(g)
    for src in srcs:
        if g.in_degree(src) != 0:
            raise ArchitectureError(f"input node {src!r} has incoming edges")
    output_node(g)
    reachable = set(srcs).union(*(nx.descendants(g, src) for src in srcs))
    unreachable = [n for n in g.nodes if n not in reachable]
    if unreachable:
        raise ArchitectureError(f"node(s) {unreachable[:10]} are not reachable from the input")
    subs = subgraphs(g) if g.graph.get(SUBGRAPHS) else {}

    shapes: dict[str, Shape] = dict(zip(srcs, input_shapes(g), strict=True))
    for n in nx.lexicographical_topological_sort(g):
        data = g.nodes[n]
        if n in shapes:
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
        try:
            x = node_input_shape(g, n, shapes)
            if op == CALL_OP:
                shapes[n] = _call_shape(subs, resolve_params(op, params), x)
            else:
                shapes[n] = tuple(get_op(op).shape(resolve_params(op, params), x))
        except OpError as e:
            edges = ", ".join(f"{p}->{n}" for p in preds)
            raise ArchitectureError(f"node {n!r} (op {op!r}, input edges {edges}): {e}") from None
        except (TypeError, KeyError) as e:
            raise ArchitectureError(f"node {n!r} (op {op!r}): bad parameters {params}: {e!r}") from None
    return shapes


def _call_shape(subs: dict[str, ArchGraph], params: dict, in_shape: Shape) -> Shape:
    name = params["graph"]
    if name not in subs:
        raise OpError(f"no subgraph {name!r}; the graph holds {sorted(subs)}")
    sub = subs[name]
    want = tuple(sub.graph["input_shape"])
    if tuple(in_shape) != want:
        raise OpError(f"subgraph {name!r} takes inputs of shape {want}, got {tuple(in_shape)}")
    return tuple(infer_shapes(sub)[output_node(sub)])


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
    its inputs' hashes (sorted for sum and mul, in order for concat, gate and ops of arity > 1). The
    out-degree keeps a shared node apart from two equal copies. Further inputs hash their index and shape.
    A ``call`` node hashes its subgraph's id (not its name) and which calls share that subgraph (the
    sorted hashes of those calls, computed without it), so one branch applied twice differs from two
    equal branches with weights of their own. Metadata (space, assignment) is not part of the identity.
    """
    infer_shapes(g)
    subs = subgraphs(g) if g.graph.get(SUBGRAPHS) else {}
    sub_ids = {name: arch_id(sub) for name, sub in subs.items()}
    h = _node_hashes(g, {n: {"graph": sub_ids[name]} for n, name in calls(g).items()})
    if subs:  # second pass: each call also names the calls it shares weights with
        sharing = {name: sorted(h[n] for n, s in calls(g).items() if s == name) for name in subs}
        h = _node_hashes(g, {n: {"graph": sub_ids[name], "shared_by": sharing[name]}
                             for n, name in calls(g).items()})
    sinks = sorted(h[n] for n in g.nodes if g.out_degree(n) == 0)
    top = json.dumps([list(g.graph["input_shape"]), sinks])
    return hashlib.sha256(top.encode()).hexdigest()[:16]


def _node_hashes(g: nx.DiGraph, call_params: dict[str, dict]) -> dict[str, str]:
    h: dict[str, str] = {}
    for n in topological_order(g):
        d = g.nodes[n]
        op = d["op"]
        if op == "input":
            params = d.get("params") or {}  # {} for the first input (as always), index and shape for others
        elif op == CALL_OP:
            params = call_params[n]
        else:
            params = resolve_params(op, d.get("params", {}))
        ins = [h[p] for p in ordered_inputs(g, n)]
        if d.get("merge") in ("sum", "mul"):
            ins.sort()
        label = json.dumps([op, _canonical(params), d.get("merge"), bool(d.get("aux")), g.out_degree(n), ins],
                           sort_keys=True)
        h[n] = hashlib.sha256(label.encode()).hexdigest()
    return h


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
