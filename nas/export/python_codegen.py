"""Architecture graph -> one standalone, readable PyTorch source file.

The file defines a `torch.nn.Module` subclass (``Net`` by default) that needs only torch and the
standard library. Its ``__init__`` registers one submodule per node under the node's id, in the
builder's order (so ``state_dict`` keys equal `nas.build`'s, weights load both ways, and under one seed
``Net()`` draws the same initial weights as ``nas.build``). Its ``forward`` is straight-line code in
topological order, one line per node, with the merges written out (``torch.cat([...], 1)``, ``a + b``,
``h * t + x * (1.0 - t)``). Locals are reused once their value is dead (``x = self.conv(x)``), so peak
memory is that of a hand-written network. Identity nodes have no parameters and are written as plain
expressions rather than submodules. Auxiliary heads run in training mode and leave their outputs in
``self.aux_outputs``, as the builder does.

Module constructors come from the op table (`OpSpec.source`); graphnas-defined module classes
(`OpSpec.source_classes`) are copied into the file. The same graph gives byte-identical source.
"""

from __future__ import annotations

import inspect
import json
import keyword
import re
import textwrap
from dataclasses import dataclass

import networkx as nx

from nas.builder import _may_run_in_place, count_flops, count_params
from nas.graph import (
    CALL_OP,
    SUBGRAPHS,
    ArchitectureError,
    arch_id,
    aux_nodes,
    aux_outputs,
    calls,
    infer_shapes,
    input_nodes,
    node_input_shape,
    ordered_inputs,
    output_node,
    subgraphs,
    topological_order,
)
from nas.ops import OpError, Shape, get_op, resolve_params
from nas.preprocessing import without_input_normalization

_SENTINEL = 987_654_319  # a channel count no real network has, to find where a constructor writes it
_WIDTH = 110  # wrap long generated lines (long concatenations) near this width


class ExportError(ValueError):
    """An architecture cannot be exported as asked; the message names the node, op or file at fault."""


@dataclass(frozen=True)
class _Node:
    name: str
    op: str
    params: dict
    in_shape: Shape
    out_shape: Shape
    inputs: tuple[str, ...]
    merge: str | None
    aux: bool


def _render(op: str, params: dict, in_shape: Shape, where: str) -> tuple[str, tuple[str, ...]]:
    spec = get_op(op)
    if spec.source is None:
        raise ExportError(f"node {where!r}: op {op!r} has no source template (OpSpec.source), so it cannot be "
                          "exported as Python; give its op-table entry a `source`")
    out = spec.source(params, in_shape)
    if isinstance(out, str):
        return out, ()
    if not (isinstance(out, tuple) and out and all(isinstance(s, str) for s in out)):
        raise ExportError(f"op {op!r}: OpSpec.source must return a string or a tuple of strings, got {out!r}")
    return out[0], tuple(out[1:])


def _symbolic(node: _Node, name: str, real: int, params: dict | None = None, in_shape: Shape | None = None
              ) -> tuple[str, tuple[str, ...]] | None:
    """The node's constructor with the value `real` written as the variable `name`: rendered with a
    sentinel in its place (in `params` or `in_shape`), which must map back to the real rendering. None
    where the op does not write the value as a plain number (then the argument is not offered)."""
    try:
        want = _render(node.op, node.params, node.in_shape, node.name)
        sym = _render(node.op, params or node.params, in_shape or node.in_shape, node.name)
    except (OpError, ArithmeticError, TypeError, ValueError):
        return None
    token = str(_SENTINEL)
    if token not in sym[0] or tuple(s.replace(token, str(real)) for s in (sym[0], *sym[1])) != (want[0], *want[1]):
        return None
    return sym[0].replace(token, name), tuple(s.replace(token, name) for s in sym[1])


def _shape_free(node: _Node) -> bool:
    """Whether the node's constructor and output do not depend on its input's channel count."""
    if not _plain(node):
        return False
    changed = (node.in_shape[0] + 1, *node.in_shape[1:])
    try:
        spec = get_op(node.op)
        same_shape = tuple(spec.shape(node.params, changed)) == (changed[0], *node.out_shape[1:])
        same_source = _render(node.op, node.params, changed, node.name) == _render(node.op, node.params,
                                                                                  node.in_shape, node.name)
        return same_shape and node.in_shape == node.out_shape and same_source
    except (OpError, ArithmeticError, TypeError, ValueError):
        return False


def _classifier(nodes: dict[str, _Node], sink: str) -> str | None:
    """The linear layer whose output reaches `sink` through shape-preserving, parameter-free ops."""
    n = nodes[sink]
    while n.op != "linear":
        if len(n.inputs) != 1 or n.inputs[0] not in nodes or not _shape_free(n):
            return None
        n = nodes[n.inputs[0]]
    return n.name


_ARG_TYPES = {"input_scale": "float", "input_mean": "tuple[float, ...]", "input_std": "tuple[float, ...]"}


def _input_normalize(g: nx.DiGraph, src: str) -> str | None:
    """The `normalize` node that alone reads the input (the exported input preprocessing), or None."""
    succ = list(g.successors(src))
    if len(succ) == 1 and g.nodes[succ[0]].get("op") == "normalize" and not g.nodes[succ[0]].get("aux"):
        return succ[0]
    return None


def _fmt_shape(shape: Shape) -> str:
    return "x".join(str(v) for v in shape)


def _wrap(prefix: str, items: list[str], suffix: str, indent: str) -> list[str]:
    """`prefix` + items joined by ', ' + `suffix`, broken over lines inside the brackets when long."""
    line = f"{indent}{prefix}{', '.join(items)}{suffix}"
    if len(line) <= _WIDTH:
        return [line]
    cont = indent + " " * len(prefix)
    body = textwrap.wrap(", ".join(items), width=_WIDTH - len(cont), break_long_words=False,
                         break_on_hyphens=False)
    lines = [f"{indent}{prefix}{body[0]}"] + [cont + b for b in body[1:]]
    lines[-1] += suffix
    return lines


def _comment_block(text: str, width: int = 100) -> list[str]:
    return ["# " + w for w in textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=False)]


def _arg_name(node: str) -> str:
    """The forward argument of a further input node: its id, unless that could clash with a local (x, x1, ...)
    or a name the file uses."""
    if re.fullmatch(r"x\d*", node) or node in ("self", "torch", "nn") or keyword.iskeyword(node):
        return f"input_{node}"
    return node


def _subgraph_class_names(names: list[str], taken: set[str]) -> dict[str, str]:
    out = {}
    for name in names:
        base = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Subgraph"
        cls, i = base, 1
        while cls in taken or not cls.isidentifier() or keyword.iskeyword(cls):
            i += 1
            cls = f"{base}{i}"
        taken.add(cls)
        out[name] = cls
    return out


@dataclass
class _ClassCode:
    lines: list[str]
    classes: list[type]
    norm: str | None
    aux_count: int


def python_source(g: nx.DiGraph, *, class_name: str = "Net") -> str:
    """The source of a standalone module defining `class_name`, equivalent to `nas.build(g)`. A subgraph
    (weight sharing) becomes a class of its own, of which `class_name` holds one instance."""
    if not (isinstance(class_name, str) and class_name.isidentifier() and not keyword.iskeyword(class_name)):
        raise ExportError(f"class_name must be a Python identifier, got {class_name!r}")
    shapes = infer_shapes(g)
    order = topological_order(g)
    srcs, out = input_nodes(g), output_node(g)
    params_total = count_params(g)  # also builds every module once (on the meta device): bad params raise here
    macs = count_flops(g)
    subs = subgraphs(g) if g.graph.get(SUBGRAPHS) else {}
    called = calls(g)
    sub_order = list(dict.fromkeys(called[n] for n in order if n in called))  # the builder's order
    sub_class = _subgraph_class_names(sub_order, {class_name})
    parts = [_class_code(subs[name], sub_class[name], {}, top=False,
                         doc=f"Subgraph {name!r}: one instance, shared by every call in {class_name}.")
             for name in sub_order]
    main = _class_code(g, class_name, sub_class, top=True)
    classes: list[type] = []
    for part in (*parts, main):
        classes += [c for c in part.classes if c not in classes]
    clash = ({class_name} | set(sub_class.values())) & {c.__name__ for c in classes}
    if clash:
        raise ExportError(f"class_name {sorted(clash)[0]!r} clashes with a class the exported file defines")
    norm = main.norm

    # -- the file -------------------------------------------------------------------------------------------
    info = g.graph
    base_id = arch_id(g) if norm is None else arch_id(without_input_normalization(g))
    out_lines = [
        f'"""{class_name}: architecture {base_id}, exported by graphnas as standalone PyTorch.',
        "",
        "Needs only torch. Build the found network with `" + class_name + "()`; load trained weights with",
        '`model.load_state_dict(torch.load("weights.pt", weights_only=True))` (keys are the graph\'s node ids).',
        '"""',
        "",
        f"# arch_id: {base_id}",
    ]
    if norm is not None:
        out_lines.append(f"# arch_id with the input preprocessing node: {arch_id(g)}")
    for key in ("space", "preset"):
        if info.get(key) is not None:
            out_lines.append(f"# {key}: {info[key]}")
    for key in ("assignment", "options"):
        if info.get(key):
            out_lines += _comment_block(f"{key}: {json.dumps(info[key], sort_keys=True)}")
    aux_note = f" (auxiliary heads included: {main.aux_count})" if main.aux_count else ""
    out_lines += [
        f"# params: {params_total:,}{aux_note}",
        f"# FLOPs (multiply-accumulates, one sample): {macs:,}",
    ]
    if len(srcs) == 1:
        out_lines.append(f"# input shape (without batch): {tuple(shapes[srcs[0]])}; output shape: "
                         f"{tuple(shapes[out])}")
    else:
        names = ["x", *(_arg_name(s) for s in srcs[1:])]
        ins = ", ".join(f"{a} {tuple(shapes[s])}" for a, s in zip(names, srcs, strict=True))
        out_lines.append(f"# input shapes (without batch, forward's arguments in order): {ins}; output shape: "
                         f"{tuple(shapes[out])}")
    if norm is not None:
        out_lines += _comment_block(
            "inputs: raw, as the data set gives them (e.g. uint8 pixels, as a float or integer tensor); the "
            f"network first applies the search's preprocessing ({norm}): x * input_scale, then "
            "(x - input_mean) / input_std per channel. Its constants are not in the state dict.")
    out_lines += [
        "",
        "import torch",
        "from torch import nn",
        "",
    ]
    for cls in classes:
        out_lines += ["", *inspect.getsource(cls).rstrip("\n").split("\n"), ""]
    for part in parts:
        out_lines += [*part.lines, ""]
    out_lines += main.lines
    text = "\n".join(out_lines) + "\n"
    try:
        compile(text, f"<export of {arch_id(g)}>", "exec")
    except SyntaxError as e:  # a bug of ours or of an op's source template, never of the user's graph
        raise ExportError(f"generated source does not compile (line {e.lineno}: {e.msg}); an op's "
                          "OpSpec.source may write invalid Python") from None
    return text


def _class_code(g: nx.DiGraph, class_name: str, sub_class: dict[str, str], *, top: bool,
                doc: str | None = None) -> _ClassCode:
    """The class of graph `g`: `__init__` (one submodule per node; one instance per subgraph, of
    `sub_class[name]`) and `forward`. Only the `top` class gets constructor arguments and aux outputs."""
    shapes = infer_shapes(g)
    order = topological_order(g)
    srcs, out = input_nodes(g), output_node(g)
    src = srcs[0]
    aux = aux_nodes(g)
    aux_sinks = aux_outputs(g)
    aux_sinks = [n for n in order if n in set(aux_sinks)]  # the builder's order for model.aux_outputs

    nodes: dict[str, _Node] = {}
    for n in srcs:
        if keyword.iskeyword(n):
            raise ExportError(f"input node id {n!r} is a Python keyword; rename it")
    for n in order:
        if n in srcs:
            continue
        if keyword.iskeyword(n):  # other names are safe: node ids are only ever attributes (self.<id>)
            raise ExportError(f"node id {n!r} is a Python keyword, which cannot be an attribute name in source; "
                              "rename it")
        d = g.nodes[n]
        preds = ordered_inputs(g, n)
        nary = get_op(d["op"]).arity > 1
        merge = d.get("merge") if len(preds) > 1 and not nary else None
        in_shape = node_input_shape(g, n, shapes)
        params = resolve_params(d["op"], d.get("params", {}))
        if d["op"] == "relu" and _may_run_in_place(g, n, preds, srcs):
            params["inplace"] = True  # as the builder does
        nodes[n] = _Node(n, d["op"], params, tuple(in_shape), shapes[n], tuple(preds), merge, n in aux)
        if n not in aux:
            bad = [p for p in preds if p in aux]
            if bad:
                raise ExportError(f"node {n!r} is not auxiliary but reads auxiliary node(s) {bad}; the builder "
                                  "skips auxiliary nodes in evaluation mode, so this graph has no evaluation forward")

    # -- constructor arguments: num_classes (the classifier's width) and in_channels ---------------------
    init_args: list[tuple[str, int]] = []
    symbolic: dict[str, tuple[str, tuple[str, ...]]] = {}
    main_fc = _classifier(nodes, out) if top else None
    if main_fc is not None:
        k = nodes[main_fc].params["out_features"]
        heads = [main_fc] + [c for s in aux_sinks if (c := _classifier(nodes, s)) is not None
                             and nodes[c].params["out_features"] == k]
        rendered = {h: _symbolic(nodes[h], "num_classes", k, params={**nodes[h].params, "out_features": _SENTINEL})
                    for h in heads}
        if all(r is not None for r in rendered.values()):
            symbolic.update(rendered)
            init_args.append(("num_classes", k))
    # a `normalize` node right after the input (nas.preprocessing) is the input preprocessing: its constants
    # become keyword arguments, and in_channels is looked for in the layers after it (single-input graphs)
    single = top and len(srcs) == 1
    norm = _input_normalize(g, src) if single else None
    first = norm if norm is not None else src
    consumers = list(g.successors(first)) if single else []
    if consumers and all(c in nodes and nodes[c].merge is None and c not in symbolic and _plain(nodes[c])
                         for c in consumers):
        c_in = shapes[src][0]
        rendered = {}
        for c in consumers:
            nd = nodes[c]
            try:
                same_out = tuple(get_op(nd.op).shape(nd.params, (_SENTINEL, *nd.in_shape[1:]))) == nd.out_shape
            except (OpError, ArithmeticError, TypeError, ValueError):
                same_out = False
            sentinel_in = (_SENTINEL, *nd.in_shape[1:])
            rendered[c] = _symbolic(nd, "in_channels", c_in, in_shape=sentinel_in) if same_out else None
        if all(r is not None for r in rendered.values()):
            symbolic.update(rendered)
            init_args.append(("in_channels", c_in))
    if norm is not None:
        p = nodes[norm].params
        channels = "in_channels" if any(a == "in_channels" for a, _ in init_args) else str(shapes[src][0])
        symbolic[norm] = (f"Normalize(input_scale, input_mean, input_std, channels={channels}, "
                          f"rank={len(shapes[src])})", ())
        init_args += [("input_scale", float(p["scale"])), ("input_mean", tuple(float(v) for v in p["mean"])),
                      ("input_std", tuple(float(v) for v in p["std"]))]

    # -- __init__ -----------------------------------------------------------------------------------------
    classes: list[type] = []
    init_lines: list[str] = []
    module_of: dict[str, str] = {}  # node -> the attribute its forward line calls
    for n in order:
        if n in srcs or nodes[n].op == "identity":
            continue
        nd = nodes[n]
        if nd.op == CALL_OP:
            name = nd.params["graph"]
            if name not in module_of.values():  # one instance, made at its first call (the builder's order)
                init_lines.append(f"        self.{name} = {sub_class[name]}()")
            module_of[n] = name
            continue
        module_of[n] = n
        expr, stmts = symbolic.get(n) or _render(nd.op, nd.params, nd.in_shape, n)
        for cls in get_op(nd.op).source_classes:
            if cls not in classes:
                classes.append(cls)
        init_lines.append(f"        self.{n} = {expr}")
        init_lines += [f"        {s.replace('{m}', f'self.{n}')}" for s in stmts]

    # -- forward: values, their last readers, and local variables ----------------------------------------
    emission = [n for n in order if n not in srcs and n not in aux] + [n for n in order if n in aux]
    value = {s: s for s in srcs}
    for n in emission:  # a one-input identity node holds its input's value: no line, no local of its own
        nd = nodes[n]
        value[n] = value[nd.inputs[0]] if nd.op == "identity" and nd.merge is None else n
    if value[out] in srcs:
        raise ArchitectureError("the output node is the input itself; there is no network to export")
    end = len(emission)
    last: dict[str, int] = {}
    for i, n in enumerate(emission):
        for p in nodes[n].inputs:
            last[value[p]] = i
    for n in [out, *aux_sinks]:
        last[value[n]] = end
    var: dict[str, str] = {src: "x", **{s: _arg_name(s) for s in srcs[1:]}}
    free: list[str] = []
    counter = 0
    fwd_main: list[str] = []
    fwd_aux: list[str] = []
    for i, n in enumerate(emission):
        nd = nodes[n]
        if value[n] != n:
            continue
        args = [var[value[p]] for p in nd.inputs]
        dying = []
        for p in dict.fromkeys(value[p] for p in nd.inputs):
            if last[p] == i and (p not in srcs or p == src):  # a further input's name is never reused
                dying.append(var[p])
        free.extend(v for v in dying if v not in free)
        reuse = next((v for v in args if v in dying), None)
        if reuse is None and free:
            reuse = min(free, key=lambda v: (len(v), v))
        if reuse is not None:
            free.remove(reuse)
            name = reuse
        else:
            counter += 1
            name = f"x{counter}"
        var[n] = name
        indent = "            " if nd.aux else "        "
        comment = f"  # {n}: {_fmt_shape(nd.out_shape)}" if nd.op == "identity" else f"  # {_fmt_shape(nd.out_shape)}"
        module = module_of.get(n, n)
        if nd.merge == "concat":
            call = "" if nd.op == "identity" else f"self.{module}("
            lines = _wrap(f"{name} = {call}torch.cat([", args, f"], 1){')' if call else ''}", indent)
        elif get_op(nd.op).arity > 1:
            lines = _wrap(f"{name} = self.{module}(", args, ")", indent)
        else:
            if nd.merge is None:
                merged = args[0]
            elif nd.merge == "sum":
                merged = " + ".join(args)
            elif nd.merge == "mul":
                merged = " * ".join(args)
            else:  # gate: inputs (h, t, x)
                h, t, x = args
                merged = f"{h} * {t} + {x} * (1.0 - {t})"
            lines = [f"{indent}{name} = {merged if nd.op == 'identity' else f'self.{module}({merged})'}"]
        lines[-1] += comment
        (fwd_aux if nd.aux else fwd_main).extend(lines)

    # -- the class ------------------------------------------------------------------------------------------
    sig = ["self", *(f"{a}: {_ARG_TYPES.get(a, 'int')} = {v!r}" for a, v in init_args)]
    if doc is None and len(srcs) == 1:
        doc = f"The found network: input (N, {', '.join(map(str, shapes[src]))}), output (N, " \
              f"{', '.join(map(str, shapes[out]))})."
    elif doc is None:
        ins = ", ".join(f"{var[s]} (N, {', '.join(map(str, shapes[s]))})" for s in srcs)
        doc = f"The found network: inputs {ins}; output (N, {', '.join(map(str, shapes[out]))})."
    fwd_args = ", ".join(f"{var[s]}: torch.Tensor" for s in srcs)
    lines = [
        "",
        f"class {class_name}(nn.Module):",
        f'    """{doc}"""',
        "",
    ]
    if top:
        lines += ["    aux_outputs: list[torch.Tensor]  # auxiliary heads' outputs of the last training-mode forward",
                  ""]
    lines += [
        *_wrap("def __init__(", sig, "):", "    "),
        "        super().__init__()",
        *init_lines,
    ]
    if top:
        lines.append("        self.aux_outputs = []")
    lines += [
        "",
        f"    def forward(self, {fwd_args}) -> torch.Tensor:",
        *fwd_main,
    ]
    if aux_sinks:
        lines += [
            "        if self.training:  # auxiliary heads, for the training loss only",
            *fwd_aux,
            f"            self.aux_outputs = [{', '.join(var[value[s]] for s in aux_sinks)}]",
            "        else:",
            "            self.aux_outputs = []",
        ]
    lines.append(f"        return {var[value[out]]}")
    return _ClassCode(lines, classes, norm, len(aux_sinks))


def _plain(node: _Node) -> bool:
    """A node whose constructor can take the input's channel count as an argument: a one-input op with a
    source template (not a subgraph call, not an op of several inputs)."""
    return node.op != CALL_OP and get_op(node.op).arity == 1
