"""COMBO's expected hypervolume improvement over several objectives (``mo_acquisition="ehvi"``): one COMBO GP
per objective, independent, and botorch's analytic `ExpectedHypervolumeImprovement` over their marginals.

`IndependentGPs` is the botorch model botorch's EHVI asks: for points (b, 1, d) a posterior with mean and
variance (b, 1, m). Each objective's GP holds S hyperparameter samples; their mixture is summarised by its
mean and variance (the law of total variance), a Gaussian per objective. The hypervolume's reference point,
in the GPs' standardised units, is just below the worst observed value of each objective (by a tenth of
its range), and botorch's box decomposition of the observed front partitions what is left to improve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from botorch.acquisition.multi_objective.analytic import ExpectedHypervolumeImprovement
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
from gpytorch.distributions import MultitaskMultivariateNormal
from linear_operator.operators import DiagLinearOperator

from nas.strategies.combo.gp import ComboGP


class IndependentGPs(Model):
    """m COMBO GPs as one m-output botorch model with marginal (q = 1) posteriors."""

    def __init__(self, models: Sequence[ComboGP]):
        super().__init__()
        self.models = list(models)

    @property
    def num_outputs(self) -> int:
        return len(self.models)

    def posterior(self, X: torch.Tensor, output_indices=None, observation_noise=False, posterior_transform=None,
                  **kwargs) -> GPyTorchPosterior:
        if X.shape[-2] != 1:
            raise ValueError(f"IndependentGPs gives marginal posteriors only (q = 1), got X of shape {tuple(X.shape)}")
        batch = X.shape[:-2]
        flat = X.reshape(-1, X.shape[-1])
        means, variances = [], []
        for model in self.models:
            mu, var = model.marginals(flat)  # (S, c) per hyperparameter sample
            means.append(mu.mean(0))
            variances.append(var.mean(0) + mu.var(0, unbiased=False))
        m = len(self.models)
        mean = torch.stack(means, -1).reshape(*batch, 1, m)
        var = torch.stack(variances, -1).reshape(*batch, m).clamp_min(1e-12)
        return GPyTorchPosterior(MultitaskMultivariateNormal(mean, DiagLinearOperator(var)))


def reference_point(y: torch.Tensor) -> torch.Tensor:
    """Just below the worst observed value of each (maximised) objective: by a tenth of its range."""
    lo, hi = y.min(0).values, y.max(0).values
    return lo - 0.1 * (hi - lo).clamp_min(1e-6)


def ehvi(models: Sequence[ComboGP], y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """EHVI over points (c, d) -> (c,), given the observed (and fantasised) standardised scores y (n, m)."""
    ref = reference_point(y)
    partitioning = FastNondominatedPartitioning(ref_point=ref, Y=y)
    acq = ExpectedHypervolumeImprovement(IndependentGPs(models), ref_point=ref.tolist(), partitioning=partitioning)

    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return acq(x.to(torch.float64).unsqueeze(-2))

    return score
