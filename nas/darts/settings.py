"""DARTS' settings: the ``--strategy-option`` keys of ``nas search --strategy darts``.

Defaults are the paper's CIFAR-10 search (Sec. 3.1 and its code): 50 epochs, batch 64; weights by SGD
(lr 0.025 annealed by a cosine to 0.001, momentum 0.9, weight decay 3e-4, gradient norm clipped at 5);
alphas by Adam (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3); first order (``order=2``: the paper's
second-order approximation, unrolled one SGD step with a finite-difference Hessian-vector product);
candidate batch norms without affine parameters. A resource penalty, off by default (FBNet, Wu et al.
2019; ProxylessNAS, Cai et al. 2019): ``resource_penalty=W`` adds W times the supernet's expected cost of
``resource`` ("flops": multiply-accumulates, or "params"; `nas.darts.mixed.expected_cost`) divided by its
largest possible value to the alphas' loss, so W is on the scale of the loss whatever the network's size.
Remedies, off by default: ``partial_channels=K``
(PC-DARTS, Xu et al. 2020; K=4 there) and ``sampling="gumbel"`` (GDAS, Dong & Yang 2019; tau annealed
linearly from ``tau_max`` to ``tau_min``).

Not part of the search trial: ``assignment`` (values of the variables DARTS does not search; defaults
otherwise), ``exclude_none`` (see `nas.darts.derive`) and ``retrain_space_options`` (space options of the
retrained network over the search's, e.g. ``{"C": 36, "layers": 20}``: the paper searches 8 cells of 16
channels and evaluates 20 cells of 36). ``seed`` defaults to the search's seed. The retraining uses the
search's ordinary training settings (``--epochs``, ...).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.darts.mixed import RESOURCES, SAMPLINGS


@dataclass
class DartsSettings:
    epochs: int = 50
    batch_size: int = 64
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0
    alpha_lr: float = 3e-4
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 1e-3
    order: int = 1
    sampling: str = "softmax"
    tau_max: float = 10.0
    tau_min: float = 0.1
    partial_channels: int = 1
    affine: bool = False
    amp: bool | None = None  # None: on for CUDA (bf16)
    seed: int | None = None
    checkpoint_every: int = 1
    exclude_none: bool | None = None
    assignment: dict[str, Any] = field(default_factory=dict)
    retrain_space_options: dict[str, Any] = field(default_factory=dict)
    resource_penalty: float = 0.0
    resource: str = "flops"

    def check(self) -> DartsSettings:
        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"DARTS setting {name!r} must be {want}, got {getattr(self, name)!r}")

        for name, least in (("epochs", 1), ("batch_size", 2), ("partial_channels", 1), ("checkpoint_every", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise bad(name, f"an int >= {least}")
        for name in ("w_lr", "alpha_lr", "tau_max", "tau_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise bad(name, "a positive number")
        if self.resource not in RESOURCES:
            raise bad("resource", f"one of {RESOURCES}")
        for name in ("w_lr_min", "w_momentum", "w_weight_decay", "w_grad_clip", "alpha_weight_decay",
                     "resource_penalty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise bad(name, "a non-negative number")
        betas = self.alpha_betas
        if (not isinstance(betas, list | tuple) or len(betas) != 2
                or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas)):
            raise bad("alpha_betas", "two numbers in [0, 1)")
        self.alpha_betas = (float(betas[0]), float(betas[1]))
        if self.order not in (1, 2) or isinstance(self.order, bool):
            raise bad("order", "1 (first order) or 2 (second order)")
        if self.sampling not in SAMPLINGS:
            raise bad("sampling", f"one of {SAMPLINGS}")
        if self.sampling == "gumbel" and self.order == 2:
            raise ValueError("DARTS settings: sampling='gumbel' (GDAS) is first order; the finite-difference "
                             "second-order step needs a deterministic forward, so use order=1")
        for name in ("affine",):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        for name in ("amp", "exclude_none"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise bad(name, "true, false or null")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise bad("seed", "an int")
        for name in ("assignment", "retrain_space_options"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, "a mapping")
        return self

    @classmethod
    def from_options(cls, options: Mapping[str, Any], seed: int | None = None) -> DartsSettings:
        """Settings from strategy options; an unknown key raises naming it and the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"strategy 'darts' has no option(s) {unknown}; its options: {sorted(known)}")
        values = dict(options)
        for f in dataclasses.fields(cls):  # ints given for float settings (JSON "1" for 1.0)
            if f.type == "float" and isinstance(values.get(f.name), int) and not isinstance(values[f.name], bool):
                values[f.name] = float(values[f.name])
        s = cls(**values)
        if s.seed is None:
            s.seed = seed if seed is not None else 0
        return s.check()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
