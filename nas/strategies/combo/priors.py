"""Priors of COMBO's GP hyperparameters, as log densities over the sampled (log-scale) parameters.

Follows the reference implementation (QUVA-Lab/COMBO, `graphGP/sampler/priors.py`); the densities are
written as functions of the parameter and used, unchanged, as densities over its logarithm (no Jacobian),
as the reference does. Every function returns -inf outside the support and accepts floats or tensors
(tensors keep autograd, for the MAP fit).

- beta_i (per variable): horseshoe upper-bound density log(1 + 2 / (beta / tau)^2), tau = 5, on
  log beta in [-12, log 100].
- noise variance: log(1 + (0.1 / noise)^2) on log noise in [-12, log 1e4].
- signal variance: Gaussian over log s2, centred where the kernel's range [kernel_min, kernel_max] times
  s2 matches the variance of y, with a quarter of that range's log-width as standard deviation; support
  log s2 in [-12, log 1e4].
- constant mean: Gaussian around the middle of [min y, max y] with a quarter of the range as standard
  deviation, truncated to [min y, max y] (constant data: a unit Gaussian around it).

Normalising constants that do not depend on the parameter are dropped where the reference drops them.
"""

from __future__ import annotations

import math

import torch

from nas.strategies.combo.kernel import LOG_BETA_BOUNDS, GraphSpectrum

TAU = 5.0
LOG_NOISE_BOUNDS = (-12.0, math.log(1e4))
LOG_SIGNAL_BOUNDS = (-12.0, math.log(1e4))
NEG_INF = float("-inf")


def _t(x) -> torch.Tensor:
    return x if torch.is_tensor(x) else torch.tensor(float(x), dtype=torch.float64)


def _bounded(value: torch.Tensor, bounds: tuple[float, float], density: torch.Tensor) -> torch.Tensor:
    inside = (value >= bounds[0]) & (value <= bounds[1])
    return torch.where(inside, density, torch.full_like(density, NEG_INF))


def log_prior_log_beta(log_beta) -> torch.Tensor:
    """Horseshoe (upper-bound) log density of each beta, as a function of log beta (elementwise)."""
    lb = _t(log_beta)
    # log(1 + 2 tau^2 / beta^2) = softplus(log 2 + 2 log tau - 2 log beta): stable for tiny and huge beta
    inner = torch.nn.functional.softplus(math.log(2.0) + 2.0 * math.log(TAU) - 2.0 * lb)
    return _bounded(lb, LOG_BETA_BOUNDS, inner.log())


def log_prior_log_noise(log_noise) -> torch.Tensor:
    ln = _t(log_noise)
    inner = torch.nn.functional.softplus(2.0 * math.log(0.1) - 2.0 * ln)  # log(1 + (0.1 / noise)^2)
    return _bounded(ln, LOG_NOISE_BOUNDS, inner.log())


def kernel_range(spectrum: GraphSpectrum) -> tuple[float, float]:
    """(log kernel_min, log kernel_max) of the normalised kernel at beta = 1, as the reference computes
    them: per variable, exp(-lam_max) and exp(-lam_min) over mean_k exp(-lam_k), multiplied over variables."""
    w = torch.exp(-spectrum.eigvals) * spectrum.mask
    log_mean = (w.sum(-1) / spectrum.sizes).log()
    lam_max = (spectrum.eigvals * spectrum.mask).max(-1).values
    lam_min = spectrum.eigvals.masked_fill(spectrum.mask == 0, math.inf).min(-1).values
    return float((-lam_max - log_mean).sum()), float((-lam_min - log_mean).sum())


def log_prior_log_signal(log_signal, y_var: float, log_kernel_min: float, log_kernel_max: float) -> torch.Tensor:
    ls = _t(log_signal)
    log_var = math.log(max(y_var, 1e-12))
    lower, upper = log_var - log_kernel_max, log_var - log_kernel_min
    mid, std = 0.5 * (lower + upper), max(0.25 * (upper - lower), 1e-6)
    density = -math.log(std) - 0.5 * ((ls - mid) / std) ** 2
    return _bounded(ls, LOG_SIGNAL_BOUNDS, density)


def log_prior_mean(mean, y_min: float, y_max: float) -> torch.Tensor:
    c = _t(mean)
    mid, rad = 0.5 * (y_min + y_max), 0.5 * (y_max - y_min)
    if rad <= 0:  # constant data (standardised to 0): a unit Gaussian around it, no truncation
        return -0.5 * (c - mid) ** 2
    std = rad / 2.0
    density = -math.log(std) - 0.5 * ((c - mid) / std) ** 2
    return _bounded(c, (y_min, y_max), density)
