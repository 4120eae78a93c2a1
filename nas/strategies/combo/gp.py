"""COMBO's GP: the hyperparameter posterior (slice-sampled or maximised) and the gpytorch/botorch model
that holds S hyperparameter samples as one batch.

Hyperparameters are one vector theta = [mean, log signal variance, log noise variance, log beta_1..d],
on standardised y. `HyperPosterior.sweep` is one MCMC sweep as in the reference (mean, signal, noise,
then every beta in shuffled order, each a univariate slice-sampling step). It never builds the kernel
from scratch per step: mean, signal and noise share one eigendecomposition of the kernel's correlation
matrix P = prod_i F_i (each update is then O(n)); a beta_i step changes only the factor F_i, so its log
is swapped into the kept sum of the others' logs and one Cholesky factorisation is done per density
evaluation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import gpytorch
import numpy as np
import scipy.optimize
import torch
from botorch.models.gpytorch import GPyTorchModel
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DiagLinearOperator

from nas.strategies.combo.kernel import (
    LOG_BETA_BOUNDS,
    DiffusionKernel,
    GraphSpectrum,
    log_gram,
)
from nas.strategies.combo.priors import (
    LOG_NOISE_BOUNDS,
    LOG_SIGNAL_BOUNDS,
    kernel_range,
    log_prior_log_beta,
    log_prior_log_noise,
    log_prior_log_signal,
    log_prior_mean,
)
from nas.strategies.combo.slice_sampling import slice_sample

JITTER = 1e-6  # added to the noise variance (standardised units) in every covariance matrix
MEAN, SIGNAL, NOISE, BETA = 0, 1, 2, 3  # positions in theta
LOG2PI = math.log(2.0 * math.pi)


@dataclass
class GPData:
    """Successful observations: value indices x (n, d) as float64, standardised scores y (n,)."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def mean_bounds(self) -> tuple[float, float]:
        lo, hi = float(self.y.min()), float(self.y.max())
        return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


def initial_theta(d: int) -> list[float]:
    """Start of the chain / of the MAP fit: mean 0, signal 0.5, noise 0.1, beta 1 (standardised y)."""
    return [0.0, math.log(0.5), math.log(0.1)] + [0.0] * d


class HyperPosterior:
    """log p(theta | data) up to a constant, for the slice sampler and the MAP fit."""

    def __init__(self, spectrum: GraphSpectrum, data: GPData):
        self.spectrum, self.data = spectrum, data
        self.n, self.d = data.x.shape
        self.log_kmin, self.log_kmax = kernel_range(spectrum)
        self.y_min, self.y_max = float(data.y.min()), float(data.y.max())
        idx = data.x.round().long()
        # (d, n, m) one-hot values: a variable's factor between all pairs is onehot_i @ log G_i @ onehot_i^T,
        # a BLAS product (exact: each entry is one log G value plus zeros), several times faster than
        # gathering n^2 entries by index
        self._onehot = torch.nn.functional.one_hot(idx.T, spectrum.m).to(torch.float64)
        self._eye = torch.eye(self.n, dtype=torch.float64)

    # -- priors -----------------------------------------------------------------------------------------
    def log_prior(self, theta: torch.Tensor) -> torch.Tensor:
        return (log_prior_mean(theta[MEAN], self.y_min, self.y_max)
                + log_prior_log_signal(theta[SIGNAL], 1.0, self.log_kmin, self.log_kmax)
                + log_prior_log_noise(theta[NOISE]) + log_prior_log_beta(theta[BETA:]).sum())

    # -- the generic (differentiable) path --------------------------------------------------------------
    def log_posterior(self, theta: torch.Tensor) -> torch.Tensor:
        """Log prior + log marginal likelihood; -inf outside the prior's support or if K is not PD."""
        prior = self.log_prior(theta)
        if not torch.isfinite(prior):
            return prior
        log_g = self.spectrum.log_factors(theta[BETA:])
        log_p = log_gram(self.spectrum, log_g, self.data.x, self.data.x)
        cov = theta[SIGNAL].exp() * log_p.exp() + (theta[NOISE].exp() + JITTER) * self._eye
        return prior + self._log_likelihood(cov, self.data.y - theta[MEAN])

    def _log_likelihood(self, cov: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            return torch.tensor(-math.inf, dtype=torch.float64)
        alpha = torch.linalg.solve_triangular(chol, resid.unsqueeze(-1), upper=False).squeeze(-1)
        return -0.5 * alpha.dot(alpha) - chol.diagonal().log().sum() - 0.5 * self.n * LOG2PI

    # -- MCMC -------------------------------------------------------------------------------------------
    def _variable_log_factor(self, i: int, log_beta: float) -> torch.Tensor:
        """log F_i between all pairs of the data for beta_i = exp(log_beta): (n, n)."""
        onehot = self._onehot[i]
        return (onehot @ self._log_factor_one(i, log_beta)) @ onehot.T

    def _log_factor_one(self, i: int, log_beta: float) -> torch.Tensor:
        sp = self.spectrum
        lb = min(max(log_beta, LOG_BETA_BOUNDS[0]), LOG_BETA_BOUNDS[1])
        w = torch.exp(-math.exp(lb) * sp.eigvals[i]) * sp.mask[i]
        g = (sp.eigvecs[i] * w) @ sp.eigvecs[i].T / (w.sum() / sp.sizes[i])
        return g.clamp_min(1e-300).log()

    def sweep(self, theta: list[float], rng: random.Random) -> list[float]:
        """One MCMC sweep from theta (whose log posterior must be finite); returns the new theta."""
        theta = list(theta)
        y = self.data.y
        log_f = torch.stack([self._variable_log_factor(i, theta[BETA + i]) for i in range(self.d)])
        log_p = log_f.sum(0)

        evals, vecs = torch.linalg.eigh(log_p.exp())
        evals = evals.clamp_min(0.0)
        qy, q1 = vecs.T @ y, vecs.T @ torch.ones_like(y)

        def ll_eig(mean: float, log_signal: float, log_noise: float) -> float:
            lam = math.exp(log_signal) * evals + (math.exp(log_noise) + JITTER)
            r = qy - mean * q1
            return float(-0.5 * (lam.log().sum() + (r * r / lam).sum()))

        def lp_mean(v: float) -> float:
            prior = float(log_prior_mean(v, self.y_min, self.y_max))
            return prior if prior == -math.inf else prior + ll_eig(v, theta[SIGNAL], theta[NOISE])

        def lp_signal(v: float) -> float:
            prior = float(log_prior_log_signal(v, 1.0, self.log_kmin, self.log_kmax))
            return prior if prior == -math.inf else prior + ll_eig(theta[MEAN], v, theta[NOISE])

        def lp_noise(v: float) -> float:
            prior = float(log_prior_log_noise(v))
            return prior if prior == -math.inf else prior + ll_eig(theta[MEAN], theta[SIGNAL], v)

        theta[MEAN], _ = slice_sample(lp_mean, theta[MEAN], rng)
        theta[SIGNAL], _ = slice_sample(lp_signal, theta[SIGNAL], rng)
        theta[NOISE], _ = slice_sample(lp_noise, theta[NOISE], rng)

        signal, noise = math.exp(theta[SIGNAL]), math.exp(theta[NOISE]) + JITTER
        resid = y - theta[MEAN]
        order = list(range(self.d))
        rng.shuffle(order)
        for i in order:
            rest = log_p - log_f[i]
            current: dict[str, torch.Tensor] = {}

            def lp_beta(v: float, i: int = i, rest: torch.Tensor = rest, current: dict = current) -> float:
                prior = float(log_prior_log_beta(v))
                if prior == -math.inf:
                    return prior
                lf = self._variable_log_factor(i, v)
                cov = torch.add(rest, lf).exp_().mul_(signal)  # in place: one n x n buffer, not four
                cov.diagonal().add_(noise)
                ll = float(self._log_likelihood(cov, resid))
                current[v] = lf
                return prior + ll

            new, _ = slice_sample(lp_beta, theta[BETA + i], rng)
            if new != theta[BETA + i]:
                theta[BETA + i] = new
                log_f[i] = current[new] if new in current else self._variable_log_factor(i, new)
                log_p = rest + log_f[i]
        return theta

    def sample(self, theta: list[float], n_sweeps: int, rng: random.Random) -> list[list[float]]:
        """The chain's state after each of n_sweeps sweeps from theta."""
        out = []
        for _ in range(n_sweeps):
            theta = self.sweep(theta, rng)
            out.append(theta)
        return out

    def feasible(self, theta: list[float]) -> list[float]:
        """theta moved inside the prior's support (the data, and so its standardisation, may have changed)."""
        lo, hi = self.data.mean_bounds
        theta = list(theta)
        theta[MEAN] = min(max(theta[MEAN], lo), hi)
        theta[SIGNAL] = min(max(theta[SIGNAL], LOG_SIGNAL_BOUNDS[0]), LOG_SIGNAL_BOUNDS[1])
        theta[NOISE] = min(max(theta[NOISE], LOG_NOISE_BOUNDS[0]), LOG_NOISE_BOUNDS[1])
        theta[BETA:] = [min(max(b, LOG_BETA_BOUNDS[0]), LOG_BETA_BOUNDS[1]) for b in theta[BETA:]]
        return theta

    # -- MAP --------------------------------------------------------------------------------------------
    def fit_map(self, starts: list[list[float]], max_iter: int = 200) -> list[float]:
        """The best local maximum of the log posterior reached by L-BFGS-B from each start."""
        bounds = [self.data.mean_bounds, LOG_SIGNAL_BOUNDS, LOG_NOISE_BOUNDS] + [LOG_BETA_BOUNDS] * self.d

        def neg(z: np.ndarray) -> tuple[float, np.ndarray]:
            theta = torch.tensor(z, dtype=torch.float64, requires_grad=True)
            value = self.log_posterior(theta)
            if not torch.isfinite(value):
                return 1e10, np.zeros_like(z)
            (-value).backward()
            return float(-value.detach()), theta.grad.numpy().copy()

        best, best_value = None, math.inf
        for start in starts:
            z0 = np.array(self.feasible(start))
            res = scipy.optimize.minimize(neg, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                                          options={"maxiter": max_iter})
            if res.fun < best_value:
                best, best_value = [float(v) for v in res.x], float(res.fun)
        return best if best is not None else self.feasible(starts[0])


def psd_cholesky(k: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of the (batched) matrix k, adding diagonal jitter (up to 1e-2) if it is not PD."""
    chol, info = torch.linalg.cholesky_ex(k)
    jitter = 1e-8
    while bool((info != 0).any()) and jitter <= 1e-2:
        chol, info = torch.linalg.cholesky_ex(k + jitter * torch.eye(k.shape[-1], dtype=k.dtype))
        jitter *= 10
    if bool((info != 0).any()):
        raise torch.linalg.LinAlgError("ComboGP: the training covariance is not positive definite")
    return chol


class ComboGP(gpytorch.models.ExactGP, GPyTorchModel):
    """S GPs with the diffusion kernel, one per hyperparameter sample, as one gpytorch batch.

    A botorch ensemble model (`_is_ensemble`): its `posterior` gives, for candidates X of shape
    (b, 1, d), each sample's marginal Normal, shape (b, S, 1, 1); botorch's analytic acquisition functions
    then average over the samples (LogEI through a log-mean-exp). Candidates are marginal (q = 1):
    the joint covariance between candidates is never formed.
    """

    _num_outputs = 1
    _is_ensemble = True

    def __init__(self, spectrum: GraphSpectrum, train_x: torch.Tensor, train_y: torch.Tensor,
                 thetas: torch.Tensor):
        s = thetas.shape[0]
        batch = torch.Size([s])
        likelihood = gpytorch.likelihoods.GaussianLikelihood(batch_shape=batch,
                                                             noise_constraint=GreaterThan(1e-12))
        super().__init__(train_x.expand(s, *train_x.shape), train_y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch)
        self.covar_module = gpytorch.kernels.ScaleKernel(DiffusionKernel(spectrum, batch_shape=batch),
                                                         batch_shape=batch, outputscale_constraint=GreaterThan(1e-12))
        self.double()
        with torch.no_grad():
            self.mean_module.constant.copy_(thetas[:, MEAN].reshape(self.mean_module.constant.shape))
            self.covar_module.outputscale = thetas[:, SIGNAL].exp()
            self.likelihood.noise = (thetas[:, NOISE].exp() + JITTER).unsqueeze(-1)
            self.covar_module.base_kernel.log_beta.copy_(thetas[:, BETA:])
        self.eval()
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def batch_shape(self) -> torch.Size:
        return self.train_targets.shape[:-1]

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def marginals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the latent function at the points x (c, d): each (S, c).

        Computed from the model's own modules with a cached Cholesky factor of each sample's training
        covariance: gpytorch's generic prediction path would also build the c x c test covariance.
        """
        with torch.no_grad():
            if self._cache is None:
                train_x = self.train_inputs[0]
                k = self.covar_module.forward(train_x, train_x)
                k = k + self.likelihood.noise.unsqueeze(-1) * torch.eye(k.shape[-1], dtype=k.dtype)
                chol = psd_cholesky(k)
                eye = torch.eye(k.shape[-1], dtype=k.dtype).expand_as(k)
                chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # (S, n, n)
                resid = self.train_targets - self.mean_module.constant.reshape(-1, 1)
                alpha = chol_inv.transpose(-1, -2) @ (chol_inv @ resid.unsqueeze(-1))  # K^-1 (y - mean)
                self._cache = (train_x[0], chol_inv, alpha.squeeze(-1))
            train_x, chol_inv, alpha = self._cache
            kxn = self.covar_module.forward(x, train_x)  # (S, c, n)
            mean = self.mean_module.constant.reshape(-1, 1) + (kxn @ alpha.unsqueeze(-1)).squeeze(-1)
            v = kxn @ chol_inv.transpose(-1, -2)  # (S, c, n): rows L^-1 k(x, X)
            var = self.covar_module.forward(x, x, diag=True) - (v * v).sum(-1)
            return mean, var.clamp_min(0.0)

    def posterior(self, X: torch.Tensor, output_indices=None, observation_noise=False,
                  posterior_transform=None, **kwargs) -> GPyTorchPosterior:
        if X.shape[-2] != 1:
            raise ValueError(f"ComboGP gives marginal posteriors only (q = 1), got X of shape {tuple(X.shape)}")
        if observation_noise is not False or posterior_transform is not None:
            raise NotImplementedError("ComboGP.posterior: observation_noise / posterior_transform are not supported")
        batch = X.shape[:-2]
        mean, var = self.marginals(X.reshape(-1, X.shape[-1]))  # (S, c)
        s = mean.shape[0]
        mean = mean.T.reshape(*batch, s, 1)
        var = var.T.reshape(*batch, s, 1).clamp_min(1e-12)
        return GPyTorchPosterior(MultivariateNormal(mean, DiagLinearOperator(var)))
