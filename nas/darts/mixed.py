"""The ``mixed`` op: a node computing the softmax-weighted sum of its candidate ops (DARTS' MixedOp).

Params: ``variable`` (the op-choice variable it relaxes), ``candidates`` (``[{"op", "params"}, ...]``, one
per alternative of the variable, in domain order), ``values`` (the alternatives, for reading) and
``partial_channels`` (PC-DARTS' K: only the first C/K channels go through the candidates, the rest
bypass them, then a channel shuffle; 1 = off).

`MixedOp` keeps its candidate modules (``<node>.candidates.<i>...``) apart from its architecture weights
(``<node>.alpha``, one logit per candidate, initialised as 1e-3 * N(0, 1) like the paper), so weights and
alphas split by parameter name or with `split_parameters`. A variable deciding several nodes (all the
normal cells of a cell space) has one alpha: `build_supernet_module` ties every node of a variable to the
first one's alpha (``named_parameters`` then lists it once, under the first node).

Cost (benchmarks/darts_overhead.py): zero candidates (the ``zero`` op, DARTS' 'none') are not run; they
add nothing to the output and nothing to any gradient. Candidates that start with a ReLU of the input
(DARTS' sep_conv, dil_conv, ReLU-conv-BN) share one: it is computed and kept once, not once per
candidate. The weighted sum is one autograd function that accumulates in place and keeps only what the
alphas' gradient needs: each candidate's output, except a max pooling's, which is gathered again in the
backward through the argmax indices the pooling keeps anyway. Results equal the plain
``sum(w_i * op_i(x))`` up to float rounding.

Sampling: ``module.sampling = "gumbel"`` (with ``module.tau``) runs GDAS instead in training mode: a hard
Gumbel-softmax sample picks one candidate per forward, which alone runs; the straight-through estimator
passes gradients to all alphas. Evaluation mode always uses the softmax mixture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.ops import OpError, OpSpec, Shape, get_op, register_op, resolve_params

ZERO_OPS = frozenset({"zero"})
SAMPLINGS = ("softmax", "gumbel")
ALPHA_INIT_SCALE = 1e-3


# -- params -> candidate plan -------------------------------------------------------------------------


def _plan(p: dict, in_shape: Shape) -> list[tuple[str, dict, Shape]]:
    """Each candidate's (op, resolved params, input shape); raises naming the variable."""
    var = p["variable"]
    if not isinstance(var, str):
        raise OpError(f"mixed.variable must be the op-choice variable's name, got {var!r}")
    cands = p["candidates"]
    if not isinstance(cands, list | tuple) or not cands:
        raise OpError(f"mixed node of variable {var!r}: candidates must be a non-empty list")
    k = p["partial_channels"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise OpError(f"mixed node of variable {var!r}: partial_channels must be an int >= 1, got {k!r}")
    cin = tuple(in_shape)
    if k > 1:
        if len(in_shape) != 3 or in_shape[0] % k:
            raise OpError(f"mixed node of variable {var!r}: partial channels K={k} need a (C, H, W) input with C "
                          f"divisible by K, got {tuple(in_shape)}")
        cin = (in_shape[0] // k, *in_shape[1:])
    plan = []
    for i, c in enumerate(cands):
        if not isinstance(c, dict) or not isinstance(c.get("op"), str) or set(c) - {"op", "params"}:
            raise OpError(f"mixed node of variable {var!r}: candidate {i} must be {{'op': name, 'params': {{...}}}}, "
                          f"got {c!r}")
        if c["op"] == "mixed":
            raise OpError(f"mixed node of variable {var!r}: candidate {i} is itself mixed")
        params = resolve_params(c["op"], dict(c.get("params") or {}))
        if k > 1 and params.get("out_channels") is not None:
            if params["out_channels"] != in_shape[0]:
                raise OpError(f"mixed node of variable {var!r}: partial channels need channel-preserving "
                              f"candidates; candidate {i} ({c['op']}) maps {in_shape[0]} to "
                              f"{params['out_channels']} channels")
            params["out_channels"] = cin[0]
        plan.append((c["op"], params, cin))
    return plan


def _mixed_shape(p: dict, in_shape: Shape) -> Shape:
    plan = _plan(p, in_shape)
    shapes = [tuple(get_op(op).shape(params, cin)) for op, params, cin in plan]
    for (op, _, _), s in zip(plan, shapes, strict=True):
        if s != shapes[0]:
            raise OpError(f"mixed node of variable {p['variable']!r}: candidate {op!r} gives shape {s} but "
                          f"{plan[0][0]!r} gives {shapes[0]}; every alternative of an op choice must give one shape")
    out = shapes[0]
    if p["partial_channels"] > 1:
        if out[0] != plan[0][2][0]:
            raise OpError(f"mixed node of variable {p['variable']!r}: partial channels need channel-preserving "
                          f"candidates, got {plan[0][2][0]} -> {out[0]} channels")
        _bypass(in_shape, out, p["variable"])
        out = (in_shape[0], *out[1:])
    return out


def _bypass(in_shape: Shape, out_shape: Shape, var: str) -> nn.Module:
    """What the channels that skip the candidates go through: nothing, or a 2x2 max-pool (PC-DARTS)."""
    if tuple(out_shape[1:]) == tuple(in_shape[1:]):
        return nn.Identity()
    if all(o * 2 == i for i, o in zip(in_shape[1:], out_shape[1:], strict=True)):
        return nn.MaxPool2d(2, 2)
    raise OpError(f"mixed node of variable {var!r}: partial channels support stride 1 or 2 candidates, got "
                  f"{tuple(in_shape)} -> {tuple(out_shape)}")


def _mixed_build(p: dict, in_shape: Shape) -> MixedOp:
    out = _mixed_shape(p, in_shape)
    return MixedOp(p["variable"], _plan(p, in_shape), p["partial_channels"], in_shape, out)


def _mixed_macs(p: dict, in_shape: Shape, out_shape: Shape) -> int:
    total = 0
    for op, params, cin in _plan(p, in_shape):
        spec = get_op(op)
        total += int(spec.macs(params, cin, tuple(spec.shape(params, cin))))
    return total


# -- the module ---------------------------------------------------------------------------------------


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b) in float32, without a temporary where both are dense fp32 tensors of one layout."""
    if a.dtype == b.dtype == torch.float32 and a.stride() == b.stride() and _dense(a) and _dense(b):
        flat = (a.numel(),), (1,)
        return torch.dot(a.as_strided(*flat, a.storage_offset()), b.as_strided(*flat, b.storage_offset()))
    return torch.mul(a, b).sum(dtype=torch.float32)


class _WeightedSum(torch.autograd.Function):
    """out = sum_i w[i] * ys[i]. The alphas' gradient needs every ys[i] (dL/dw[i] = <dL/dout, ys[i]>); how
    each is kept for the backward is ``kinds[i]``: None saves it; "gather" (a 2D max pooling) keeps the
    pooling's argmax indices, passed after the ys, and gathers from the input `x` again. The max pooling
    keeps `x` and those indices for its own backward anyway, so that costs no memory (and a gather is far
    cheaper than pooling again)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, x: torch.Tensor, kinds: list, *tensors: torch.Tensor) -> torch.Tensor:
        ys, extras = tensors[:len(kinds)], iter(tensors[len(kinds):])
        out = ys[0] * w[0].to(ys[0].dtype)
        for i in range(1, len(ys)):
            out.addcmul_(ys[i], w[i].to(out.dtype))
        kept = [y if kind is None else next(extras) for kind, y in zip(kinds, ys, strict=True)]
        ctx.kinds, ctx.n_in, ctx.dtypes = kinds, len(tensors), [y.dtype for y in ys]
        ctx.save_for_backward(w, x if any(k is not None for k in kinds) else None, *kept)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        w, x, *kept = ctx.saved_tensors
        gw = None
        if ctx.needs_input_grad[0]:
            dots = []
            for kind, s in zip(ctx.kinds, kept, strict=True):
                if kind == "gather":
                    s = x.flatten(2).gather(2, s.flatten(2)).view(s.shape)
                dots.append(_dot(g, s))
            gw = torch.stack(dots).to(w.dtype)
        gys = [(g * w[i].to(g.dtype)).to(dtype) if ctx.needs_input_grad[i + 3] else None
               for i, dtype in enumerate(ctx.dtypes)]
        return (gw, None, None, *gys, *[None] * (ctx.n_in - len(ctx.kinds)))


def _keep_kind(m: nn.Module) -> str | None:
    """How `_WeightedSum` keeps this candidate's output for the alphas' gradient (see there)."""
    return "gather" if isinstance(m, nn.MaxPool2d) and not m.return_indices else None


def _starts_with_relu(m: nn.Module) -> bool:
    """A ReLU first, possibly nested in Sequentials (DARTS' sep/dil convs, ReLU-conv-BN)."""
    if isinstance(m, nn.ReLU):
        return True
    return isinstance(m, nn.Sequential) and len(m) > 0 and _starts_with_relu(m[0])


def _run_after_relu(m: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """Run `m` (which `_starts_with_relu`) on an input whose ReLU `r` is already computed."""
    if isinstance(m, nn.ReLU):
        return r
    y = _run_after_relu(m[0], r)
    for layer in list(m)[1:]:
        y = layer(y)
    return y


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedOp(nn.Module):
    def __init__(self, variable: str, plan: list[tuple[str, dict, Shape]], partial_channels: int,
                 in_shape: Shape, out_shape: Shape):
        super().__init__()
        self.variable = variable
        self.ops = [op for op, _, _ in plan]
        self.candidates = nn.ModuleList(get_op(op).build(params, cin) for op, params, cin in plan)
        self.alpha = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(len(plan)))
        active = [i for i, op in enumerate(self.ops) if op not in ZERO_OPS]
        self._active = active
        self.register_buffer("_active_index", torch.tensor(active, dtype=torch.long), persistent=False)
        self._all_active = len(active) == len(plan)
        relu_first = [_starts_with_relu(c) and i in active for i, c in enumerate(self.candidates)]
        self._shares_relu = relu_first if sum(relu_first) >= 2 else [False] * len(plan)
        self._kinds = [_keep_kind(c) for c in self.candidates]
        self.partial_channels = partial_channels
        self.bypass = _bypass(in_shape, out_shape, variable) if partial_channels > 1 else None
        self.sampling = "softmax"
        self.tau = 1.0
        # each candidate's cost, for a differentiable resource penalty (`expected_cost`): multiply-accumulates
        # per sample (the project's count, `nas.builder.count_flops`'s rule per op) and parameters
        macs = [float(get_op(op).macs(params, cin, tuple(get_op(op).shape(params, cin)))) for op, params, cin in plan]
        n_params = [float(sum(p.numel() for p in c.parameters())) for c in self.candidates]
        self.register_buffer("cost_flops", torch.tensor(macs, dtype=torch.float64), persistent=False)
        self.register_buffer("cost_params", torch.tensor(n_params, dtype=torch.float64), persistent=False)

    def extra_repr(self) -> str:
        return f"variable={self.variable!r}, ops={self.ops}, partial_channels={self.partial_channels}"

    def weights(self) -> torch.Tensor:
        """The softmax of the alphas (the mixture's weights)."""
        return F.softmax(self.alpha, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.partial_channels
        if k == 1:
            return self._mix(x)
        c = x.shape[1] // k
        y = torch.cat([self._mix(x[:, :c]), self.bypass(x[:, c:])], dim=1)
        return _channel_shuffle(y, k)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        if self.sampling == "gumbel" and self.training:
            return self._sample(x)
        if not self._active:
            return self.candidates[0](x)
        w = F.softmax(self.alpha, dim=0)
        if not self._all_active:
            w = w.index_select(0, self._active_index)
        shared = F.relu(x) if any(self._shares_relu) else None
        ys, extras = [], []
        for i in self._active:
            if self._kinds[i] == "gather":
                m = self.candidates[i]
                y, idx = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode,
                                      return_indices=True)
                extras.append(idx)
            elif self._shares_relu[i]:
                y = _run_after_relu(self.candidates[i], shared)
            else:
                y = self.candidates[i](x)
            ys.append(y)
        return _WeightedSum.apply(w, x, [self._kinds[i] for i in self._active], *ys, *extras)

    def _sample(self, x: torch.Tensor) -> torch.Tensor:
        """GDAS: run one sampled candidate; the others' (zero-valued) hard weights carry their gradient."""
        h = F.gumbel_softmax(self.alpha, tau=self.tau, hard=True)
        i = int(h.detach().argmax())
        y = self.candidates[i](x)
        return y * h[i].to(y.dtype) + (h.sum() - h[i]).to(y.dtype)


register_op(OpSpec(
    "mixed", _mixed_shape, _mixed_build, required=("variable", "candidates"),
    defaults={"values": None, "partial_channels": 1}, macs=_mixed_macs,
    doc="DARTS: softmax(alpha)-weighted sum of candidate ops (one per alternative of an op-choice variable)",
))


# -- a supernet's mixed modules and parameters ---------------------------------------------------------


def mixed_modules(model: nn.Module) -> dict[str, list[MixedOp]]:
    """variable -> its MixedOp modules, in module order."""
    out: dict[str, list[MixedOp]] = {}
    for m in model.modules():
        if isinstance(m, MixedOp):
            out.setdefault(m.variable, []).append(m)
    return out


def tie_alphas(model: nn.Module) -> dict[str, nn.Parameter]:
    """Give every MixedOp of one variable the first one's alpha; returns variable -> alpha."""
    alphas = {}
    for var, mods in mixed_modules(model).items():
        first = mods[0].alpha
        for m in mods[1:]:
            if m.alpha.shape != first.shape:
                raise OpError(f"variable {var!r}: its mixed nodes have {first.numel()} and {m.alpha.numel()} "
                              "candidates; one variable needs one candidate list")
            m.alpha = first
        alphas[var] = first
    return alphas


def alpha_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """variable -> its alpha (after `tie_alphas`, one per variable)."""
    out: dict[str, nn.Parameter] = {}
    for var, mods in mixed_modules(model).items():
        if any(m.alpha is not mods[0].alpha for m in mods):
            raise ValueError(f"variable {var!r} has untied alphas; build the supernet with build_supernet_module")
        out[var] = mods[0].alpha
    return out


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, alphas): every trainable parameter once, alphas apart."""
    alpha_ids = {id(a) for a in alpha_parameters(model).values()}
    weights, alphas = [], []
    for p in model.parameters():
        if p.requires_grad:
            (alphas if id(p) in alpha_ids else weights).append(p)
    return weights, alphas


def set_sampling(model: nn.Module, mode: str, tau: float = 1.0) -> None:
    if mode not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {mode!r}")
    for mods in mixed_modules(model).values():
        for m in mods:
            m.sampling, m.tau = mode, float(tau)


def architecture_weights(model: nn.Module) -> dict[str, list[float]]:
    """variable -> softmax of its alpha, as plain floats (candidate order = the variable's domain order)."""
    with torch.no_grad():
        return {var: [float(v) for v in F.softmax(a.float(), dim=0).cpu()]
                for var, a in alpha_parameters(model).items()}


RESOURCES = ("flops", "params")


def expected_cost(model: nn.Module, resource: str = "flops") -> tuple[torch.Tensor, float]:
    """The supernet's expected cost of `resource` under the alphas (FBNet, ProxylessNAS): over every mixed
    node, the softmax of its alpha times its candidates' costs, summed; differentiable in the alphas. Returns
    it and the largest it can be (every node at its costliest candidate), to make a penalty scale-free."""
    if resource not in RESOURCES:
        raise ValueError(f"resource must be one of {RESOURCES}, got {resource!r}")
    total, most = None, 0.0
    for mods in mixed_modules(model).values():
        for m in mods:
            cost = getattr(m, f"cost_{resource}")
            w = F.softmax(m.alpha.double(), dim=0)
            term = (w * cost.to(w.device)).sum()
            total = term if total is None else total + term
            most += float(cost.max())
    if total is None:
        raise ValueError("the model has no mixed ops")
    return total, most


def build_supernet_module(g) -> nn.Module:
    """`nas.build(g)` with the alphas of each variable tied (see the module docstring)."""
    from nas.builder import build

    model = build(g)
    tie_alphas(model)
    return model
