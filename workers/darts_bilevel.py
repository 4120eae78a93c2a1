"""DARTS' bilevel optimisation: weights on one half of the training split, alphas on the other.

Each step (the paper's Algorithm 1, alphas first as in its code) takes one batch of each half:

1. alphas: Adam on the loss of the alpha half. First order: its gradient at the current weights w.
   Second order: at the weights after one virtual SGD step on the weight half,
   w' = w - xi * (momentum * buffer + grad L_w(w) + weight_decay * w), xi = the current weight lr, minus
   xi times the Hessian-vector product d2 L_w / (d alpha d w) . grad_w' L_a(w'), taken by finite
   differences at w +- eps * grad_w' L_a(w') with eps = 0.01 / ||grad_w' L_a(w')|| (eq. 7-8).
   Batch-norm running statistics touched by these extra forwards are restored afterwards. The two
   finite-difference forwards run in float32 even under AMP: their gradients differ by O(eps), which bf16's
   8-bit mantissa does not resolve (the term's cosine similarity to the float32 one drops far below 1).
2. weights: SGD with momentum on the loss of the weight half, gradient norm clipped.

With ``resource_penalty`` W > 0 the alphas' loss gains W * E[cost] / max cost (`nas.darts.mixed.expected_cost`:
the expected multiply-accumulates or parameters of the mixed ops under the alphas); its gradient, which
depends on the alphas alone, is added to the alpha gradient of either order. The weights never see it.

The weight lr follows a per-epoch cosine from ``w_lr`` to ``w_lr_min`` (the paper's schedule). After each
epoch batch-norm statistics are re-estimated and the supernet (softmax mixture) is evaluated on the
validation split when one is given: an indication only, the derived network is what gets evaluated.

AMP (on by default on CUDA) is bfloat16 where the GPU has it natively (`workers.devices.amp_dtype`); where it
would be float16 the search runs in float32 instead (its alpha gradients are taken with ``autograd.grad``
without loss scaling, where float16 gradients underflow). The halves are index sets into one copy of the
training split on the device (`on_training_split`), not copies of it.

Data-parallel (``shard=(rank, world)``, `workers.darts_trainable.darts_loop_per_worker` on Ray Train workers):
every rank holds the same supernet and data, draws the same global batches (one seeded generator) and computes on
its slice of each (every ``world``-th example, as `workers.data.Batches` slices), its loss weighted by the slice's
share of the batch; every gradient the step uses is summed over the ranks (all-reduced) before it is used: the
weights' (before clipping), the alphas', and for the second order each gradient of the chain (the virtual step's,
the alpha half's at w' and the finite-difference pair). So every rank takes the step one device takes on the global
batch, and weights and alphas stay identical on every rank. Batch norm: per slice on CPUs (gloo has no
SyncBatchNorm), global with SyncBatchNorm on GPUs (the worker loop converts it); the epoch's metrics are the global
batches'.

Run inside the Ray worker by `workers.darts_trainable`; the supernet itself comes from `nas.darts`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.darts.mixed import alpha_parameters, architecture_weights, expected_cost, set_sampling
from nas.darts.settings import DartsSettings
from workers.devices import amp_dtype
from workers.tasks import Classification
from workers.training import AUX_WEIGHT, default_device, evaluate_batches, recalibrate_bn


class SearchDiverged(RuntimeError):
    """The supernet's loss became NaN or infinite."""


def split_indices(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights' indices, alphas' indices): a seeded random halving of ``range(n)``."""
    if n < 4:
        raise ValueError(f"DARTS needs at least 4 training examples to split in halves, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n // 2], perm[n // 2:]


def split_halves(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """(x_w, y_w, x_alpha, y_alpha): the halves of `split_indices` as tensors (copies; a search on a large
    split uses `BilevelSearch.on_training_split`, which keeps one copy and the indices)."""
    a, b = (i.to(y.device) for i in split_indices(len(y), seed))
    return x[a], y[a], x[b], y[b]


def _search_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast type of a DARTS search under AMP: bfloat16 where native, else None (float32)."""
    dtype = amp_dtype(device)
    return dtype if dtype == torch.bfloat16 else None


class BilevelSearch:
    """One DARTS search of a supernet (a module with tied alphas); call `run_epoch()` until `done`."""

    def __init__(self, model: nn.Module, x_w: torch.Tensor, y_w: torch.Tensor, x_a: torch.Tensor,
                 y_a: torch.Tensor, settings: DartsSettings, device: str | torch.device | None = None,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 index_w: torch.Tensor | None = None, index_a: torch.Tensor | None = None,
                 shard: tuple[int, int] = (0, 1)):
        """The weights' half is ``x_w[index_w]`` (all of ``x_w`` when `index_w` is None), the alphas'
        ``x_a[index_a]``; `on_training_split` passes one tensor twice with two index halves. `shard` (rank,
        world size): data-parallel (module docstring; torch.distributed initialised by the caller)."""
        self.settings = s = settings.check()
        self.rank, self.world = shard
        self._share = 1.0  # this rank's slice of the current global batch, as a fraction of it
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device)
        dev = self.device
        moved: dict[int, torch.Tensor] = {}  # a tensor given twice is moved (and held) once

        def to_dev(t: torch.Tensor) -> torch.Tensor:
            return moved.setdefault(id(t), t.to(dev))

        def index(i: torch.Tensor | None, n: int) -> torch.Tensor:
            return (torch.arange(n) if i is None else i).to(dev)

        self._w = (to_dev(x_w), to_dev(y_w), index(index_w, len(y_w)))
        self._a = (to_dev(x_a), to_dev(y_a), index(index_a, len(y_a)))
        self.x_val = x_val.to(dev) if x_val is not None else None
        self.y_val = y_val.to(dev) if y_val is not None else None
        self.loss_fn = loss_fn or F.cross_entropy
        # inputs are kept as the data set gives them (uint8 images: 4x less memory) and each batch is prepared
        # on the device (`workers.data.inputs.InputTransform`); None: they are already prepared
        self.prepare = prepare
        self.classify = not torch.is_floating_point(y_w)
        want_amp = s.amp if s.amp is not None else dev.type == "cuda"
        self.amp_dtype = _search_dtype(dev) if want_amp else None
        self.alphas_by_var = alpha_parameters(self.model)
        if not self.alphas_by_var:
            raise ValueError("the model has no mixed ops: build it with nas.darts.mixed.build_supernet_module")
        self.alphas = list(self.alphas_by_var.values())
        alpha_ids = {id(a) for a in self.alphas}
        self.weights = [p for p in self.model.parameters() if p.requires_grad and id(p) not in alpha_ids]
        self.w_opt = torch.optim.SGD(self.weights, lr=s.w_lr, momentum=s.w_momentum, weight_decay=s.w_weight_decay)
        self.a_opt = torch.optim.Adam(self.alphas, lr=s.alpha_lr, betas=s.alpha_betas,
                                      weight_decay=s.alpha_weight_decay)
        n_w, n_a = len(self._w[2]), len(self._a[2])
        self.batch_size = min(s.batch_size, n_w, n_a)
        if self.batch_size < self.world:
            raise ValueError(f"DARTS batch size {self.batch_size} is smaller than the {self.world} workers sharing "
                             "each batch")
        self.steps_per_epoch = max(1, min(n_w, n_a) // self.batch_size)
        self.generator = torch.Generator().manual_seed(0 if s.seed is None else s.seed)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []

    @classmethod
    def on_training_split(cls, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: DartsSettings,
                          device: str | torch.device | None = None, **kw) -> BilevelSearch:
        """A search on the seeded halves (`split_indices` with the settings' seed) of one training split,
        held once on the device."""
        index_w, index_a = split_indices(len(y), 0 if settings.seed is None else settings.seed)
        return cls(model, x, y, x, y, settings, device, index_w=index_w, index_a=index_a, **kw)

    # the halves as tensors (copies; for inspection)
    x_w = property(lambda self: self._w[0][self._w[2]])
    y_w = property(lambda self: self._w[1][self._w[2]])
    x_a = property(lambda self: self._a[0][self._a[2]])
    y_a = property(lambda self: self._a[1][self._a[2]])

    @property
    def done(self) -> bool:
        return self.epoch >= self.settings.epochs

    def lr_at(self, epoch: int) -> float:
        s = self.settings
        return s.w_lr_min + (s.w_lr - s.w_lr_min) * 0.5 * (1.0 + math.cos(math.pi * epoch / s.epochs))

    def tau_at(self, epoch: int) -> float:
        s = self.settings
        return s.tau_max - (s.tau_max - s.tau_min) * epoch / max(s.epochs - 1, 1)

    # -- losses and steps ---------------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, y: torch.Tensor, autocast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                            enabled=self.amp_dtype is not None and autocast):
            out = self.model(x)
        loss = self.loss_fn(out.float(), y)
        for aux in getattr(self.model, "aux_outputs", None) or []:
            loss = loss + AUX_WEIGHT * self.loss_fn(aux.float(), y)
        return loss, out

    def _grads(self, loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """d loss / d params of the global batch, `loss` being the mean over this rank's slice of it: with several
        ranks the gradient of the slice's loss times its share of the global batch, summed over the ranks."""
        return self.all_reduce_gradients(self._local_grads(self._weighted(loss), params))

    def _weighted(self, loss: torch.Tensor) -> torch.Tensor:
        """This rank's term of the global batch's mean loss: the slice's mean loss times its share of the batch
        (weighted before the backward, so that SyncBatchNorm's cross-rank gradient terms carry the weights)."""
        return loss if self.world == 1 else loss * self._share

    def all_reduce_gradients(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The sum over the ranks of `grads` (each rank's weighted term, `_weighted`): one all-reduce of a flat
        buffer. Unchanged on one device."""
        if self.world == 1:
            return grads
        import torch.distributed as dist

        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        out, at = [], 0
        for g in grads:
            out.append(flat[at:at + g.numel()].view_as(g))
            at += g.numel()
        return out

    def alpha_step(self, x_w: torch.Tensor, y_w: torch.Tensor, x_a: torch.Tensor, y_a: torch.Tensor,
                   lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step of the alphas; returns the alpha half's loss and outputs."""
        if self.settings.order == 1:
            loss, out = self._loss(x_a, y_a)
            grads = self._grads(loss, self.alphas)
        else:
            loss, out, grads = self._second_order(x_w, y_w, x_a, y_a, lr)
        penalty = self.resource_penalty()
        if penalty is not None:  # the same on every rank (it depends on the alphas alone): not all-reduced
            pgrads = torch.autograd.grad(penalty, self.alphas, allow_unused=True)
            grads = [g if pg is None else g + pg for g, pg in zip(grads, pgrads, strict=True)]
        for a, g in zip(self.alphas, grads, strict=True):
            a.grad = g.detach()
        self.a_opt.step()
        self.a_opt.zero_grad(set_to_none=True)
        return loss.detach(), out.detach()

    def resource_penalty(self) -> torch.Tensor | None:
        """W * expected cost / largest cost (a scalar in the alphas' graph), or None without a penalty."""
        s = self.settings
        if not s.resource_penalty:
            return None
        cost, most = expected_cost(self.model, s.resource)
        return (s.resource_penalty * cost / max(most, 1.0)).float()

    def alpha_gradient(self, x_w, y_w, x_a, y_a, lr: float) -> list[torch.Tensor]:
        """The alphas' gradient the configured order would step on (no step taken)."""
        if self.settings.order == 1:
            return [g.detach() for g in self._grads(self._loss(x_a, y_a)[0], self.alphas)]
        return [g.detach() for g in self._second_order(x_w, y_w, x_a, y_a, lr)[2]]

    def _second_order(self, x_w, y_w, x_a, y_a, lr: float):
        s, W, A = self.settings, self.weights, self.alphas
        buffers = [b.detach().clone() for b in self.model.buffers()]
        backup = [p.detach().clone() for p in W]
        try:
            g_train = self._grads(self._loss(x_w, y_w)[0], W)
            with torch.no_grad():  # w' = w - xi * (momentum * buffer + dL/dw + wd * w)
                for p, g in zip(W, g_train, strict=True):
                    step = g + s.w_weight_decay * p
                    buf = self.w_opt.state.get(p, {}).get("momentum_buffer")
                    if buf is not None:
                        step = step + s.w_momentum * buf
                    p.sub_(lr * step)
            loss, out = self._loss(x_a, y_a)
            grads = self._grads(loss, [*A, *W])
            d_alpha, d_w = grads[:len(A)], grads[len(A):]
            hessian = self.hessian_term(x_w, y_w, backup, d_w)
            if hessian is not None:
                d_alpha = [da - lr * h for da, h in zip(d_alpha, hessian, strict=True)]
        finally:
            with torch.no_grad():
                for p, b in zip(W, backup, strict=True):
                    p.copy_(b)
                for buf, b in zip(self.model.buffers(), buffers, strict=True):
                    buf.copy_(b)
        return loss, out, d_alpha

    def hessian_term(self, x_w: torch.Tensor, y_w: torch.Tensor, w: list[torch.Tensor],
                     v: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """d2 L_w / (d alpha d w) . v at weights `w`, by central differences at w +- eps * v (eps = 0.01 / ||v||),
        in float32 whatever the AMP setting; None where v is 0. Leaves the weights at w +- eps * v: the caller
        restores them (and the batch-norm buffers)."""
        W, A = self.weights, self.alphas
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in v))
        if float(norm) == 0:
            return None
        eps = 0.01 / norm
        with torch.no_grad():
            for p, b, g in zip(W, w, v, strict=True):
                p.copy_(b + eps * g)
        g_plus = self._local_grads(self._weighted(self._loss(x_w, y_w, autocast=False)[0]), A)
        with torch.no_grad():
            for p, b, g in zip(W, w, v, strict=True):
                p.copy_(b - eps * g)
        g_minus = self._local_grads(self._weighted(self._loss(x_w, y_w, autocast=False)[0]), A)
        # the difference is linear in the gradients: one all-reduce of it gives the global batch's
        return self.all_reduce_gradients([(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus, strict=True)])

    @staticmethod
    def _local_grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    def weight_step(self, x_w: torch.Tensor, y_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, out = self._loss(x_w, y_w)
        self.w_opt.zero_grad(set_to_none=True)
        self._weighted(loss).backward(inputs=self.weights)
        if self.world > 1:  # weights without a gradient (unused: the same on every rank) stay without one
            with torch.no_grad():
                used = [p for p in self.weights if p.grad is not None]
                for p, g in zip(used, self.all_reduce_gradients([p.grad for p in used]), strict=True):
                    p.grad = g
        if self.settings.w_grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.settings.w_grad_clip)
        self.w_opt.step()
        return loss.detach(), out.detach()

    # -- epochs -------------------------------------------------------------------------------------
    def _prepared(self, x: torch.Tensor) -> torch.Tensor:
        return self.prepare(x) if self.prepare is not None else x

    def _batch(self, half, perm, i):
        """The i-th global batch of `half` under `perm`; with several ranks this rank's slice of it (and its
        share of the global batch in ``_share``)."""
        x, y, index = half
        idx = index[perm[i * self.batch_size:(i + 1) * self.batch_size]]
        if self.world > 1:
            n = len(idx)
            idx = idx[self.rank::self.world]
            self._share = len(idx) / n
        return self._prepared(x[idx]), y[idx]

    def run_epoch(self) -> dict[str, Any]:
        """One epoch of alternating alpha and weight steps; returns its metrics and the alphas' weights."""
        s, model, dev = self.settings, self.model, self.device
        start = time.perf_counter()
        lr, tau = self.lr_at(self.epoch), self.tau_at(self.epoch)
        set_sampling(model, s.sampling, tau)
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        model.train()
        perm_w = torch.randperm(len(self._w[2]), generator=self.generator).to(dev)
        perm_a = torch.randperm(len(self._a[2]), generator=self.generator).to(dev)
        sums = {k: torch.zeros((), device=dev, dtype=torch.float64) for k in ("w_loss", "w_ok", "a_loss", "a_ok")}
        seen = 0
        for i in range(self.steps_per_epoch):
            xw, yw = self._batch(self._w, perm_w, i)
            xa, ya = self._batch(self._a, perm_a, i)
            a_loss, a_out = self.alpha_step(xw, yw, xa, ya, lr)
            w_loss, w_out = self.weight_step(xw, yw)
            if not (torch.isfinite(a_loss) and torch.isfinite(w_loss)):
                raise SearchDiverged(f"DARTS search diverged: non-finite loss at epoch {self.epoch + 1} step {i + 1}")
            n = len(yw)
            sums["w_loss"] += w_loss.double() * n
            sums["a_loss"] += a_loss.double() * len(ya)
            if self.classify:
                sums["w_ok"] += (w_out.argmax(1) == yw).sum()
                sums["a_ok"] += (a_out.argmax(1) == ya).sum()
            seen += n
        if self.world > 1:  # the global batches' sums, as one device has them
            import torch.distributed as dist

            totals = torch.stack([*sums.values(), torch.tensor(float(seen), device=dev, dtype=torch.float64)])
            dist.all_reduce(totals)
            sums = dict(zip(sums, totals[:-1], strict=True))
            seen = int(totals[-1])
        metrics: dict[str, Any] = {
            "epoch": self.epoch + 1, "train_loss": float(sums["w_loss"]) / seen,
            "search_loss": float(sums["a_loss"]) / seen, "lr": lr, "steps": self.steps_per_epoch,
        }
        if s.sampling == "gumbel":
            metrics["tau"] = tau
        with torch.no_grad():
            metrics[f"expected_{s.resource}"] = float(expected_cost(model, s.resource)[0])
        if self.classify:
            metrics["train_accuracy"] = float(sums["w_ok"]) / seen
            metrics["search_accuracy"] = float(sums["a_ok"]) / seen
        if self.x_val is not None and self.classify:
            recalibrate_bn(model, self._prepared(self._w[0][self._w[2][perm_w[:256]]]), batch_size=self.batch_size)
            chunks = ((self._prepared(self.x_val[i:i + 512]), {"y": self.y_val[i:i + 512]})
                      for i in range(0, len(self.y_val), 512))
            val = evaluate_batches(model, chunks, Classification())
            metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        metrics["epoch_seconds"] = time.perf_counter() - start
        self.epoch += 1
        self.history.append({**metrics, "weights": architecture_weights(model)})
        return metrics

    # -- resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": self.history, "w_opt": self.w_opt.state_dict(),
                "a_opt": self.a_opt.state_dict(), "generator": self.generator.get_state(),
                "cpu_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["cpu_rng"])
