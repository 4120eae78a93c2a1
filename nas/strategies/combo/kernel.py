"""The diffusion kernel on the graph Cartesian product of the variables' graphs (COMBO's kernel).

Each variable is a small graph: a complete graph for a `Categorical` (every other value is one step away),
a path graph for an `Ordinal`. The search space is their Cartesian product, and the diffusion kernel of a
Cartesian product with per-variable diffusion times beta_i factorises into the variables' own kernels:

    expm(-sum_i beta_i L_i (Kronecker sum)) = kron_i expm(-beta_i L_i)

so K(x, x') = s2 * prod_i G_i(beta_i)[x_i, x'_i], where G_i is built from the eigenpairs (lam_ik, u_ik) of
the small Laplacian L_i (the graph Fourier transform) and normalised as COMBO's reference does:

    G_i[a, b] = sum_k exp(-beta_i lam_ik) u_ik(a) u_ik(b) / mean_k exp(-beta_i lam_ik).

The product graph is never built. Eigenpairs are computed once per space and padded to the largest domain
m, so every variable is handled by the same tensor operation: the kernel of N x M points is
exp(onehot(x) @ blockdiag(log G) @ onehot(x')^T), two matrix products over d * m columns. Small beta makes
the values of a variable uncorrelated (G -> identity); large beta makes them alike (G -> constant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gpytorch
import numpy as np
import torch

from nas.space import Ordinal, SearchSpace

LOG_BETA_BOUNDS = (-12.0, math.log(100.0))  # the reference's support for beta: [e^-12, 100]
TINY = 1e-300  # floor for kernel factors: round-off in U diag(w) U^T can give -1e-17 where the truth is 1e-22


def laplacian(n: int, ordinal: bool) -> np.ndarray:
    """Laplacian of a path graph (ordinal) or a complete graph (categorical) on n vertices."""
    if ordinal:
        adj = np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    else:
        adj = np.ones((n, n)) - np.eye(n)
    return np.diag(adj.sum(axis=1)) - adj


@dataclass(frozen=True)
class GraphSpectrum:
    """Eigenpairs of every variable's Laplacian, padded to the largest domain size m.

    eigvals (d, m), eigvecs (d, m, m) with eigvecs[i, :, k] the k-th eigenvector of variable i (rows past
    the variable's size are zero), mask (d, m) marks the real eigenpairs, sizes (d,) the domain sizes.
    """

    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    mask: torch.Tensor
    sizes: torch.Tensor
    ordinal: tuple[bool, ...]

    @property
    def d(self) -> int:
        return self.eigvals.shape[0]

    @property
    def m(self) -> int:
        return self.eigvals.shape[1]

    @classmethod
    def of_domains(cls, sizes: list[int], ordinal: list[bool]) -> GraphSpectrum:
        d, m = len(sizes), max(sizes)
        vals, vecs, mask = np.zeros((d, m)), np.zeros((d, m, m)), np.zeros((d, m))
        for i, (n, o) in enumerate(zip(sizes, ordinal, strict=True)):
            lam, u = np.linalg.eigh(laplacian(n, o))
            vals[i, :n] = np.clip(lam, 0.0, None)  # the zero eigenvalue can come out as -1e-16
            vecs[i, :n, :n] = u
            mask[i, :n] = 1.0
        as_t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
        return cls(as_t(vals), as_t(vecs), as_t(mask), torch.tensor(sizes, dtype=torch.float64), tuple(ordinal))

    @classmethod
    def of_space(cls, space: SearchSpace) -> GraphSpectrum:
        return cls.of_domains([len(v) for v in space.variables], [isinstance(v, Ordinal) for v in space.variables])

    def factors(self, log_beta: torch.Tensor) -> torch.Tensor:
        """G_i(beta_i) for every variable: (..., d) log betas -> (..., d, m, m), zero outside the domain."""
        beta = log_beta.clamp(*LOG_BETA_BOUNDS).exp().unsqueeze(-1)
        w = torch.exp(-beta * self.eigvals) * self.mask  # (..., d, m)
        norm = w.sum(-1) / self.sizes  # mean over the variable's own eigenvalues
        g = (self.eigvecs * w.unsqueeze(-2)) @ self.eigvecs.transpose(-1, -2)
        return g / norm[..., None, None]

    def log_factors(self, log_beta: torch.Tensor) -> torch.Tensor:
        """log G_i (0 outside the domain, where one-hot codes never look)."""
        g = self.factors(log_beta)
        inside = (self.mask.unsqueeze(-1) * self.mask.unsqueeze(-2)) > 0
        return torch.where(inside, g.clamp_min(TINY).log(), torch.zeros((), dtype=g.dtype))

    def one_hot(self, x: torch.Tensor) -> torch.Tensor:
        """(..., n, d) value indices -> (..., n, d, m) one-hot codes (float64)."""
        return torch.nn.functional.one_hot(x.round().long(), self.m).to(torch.float64)


def log_gram(spectrum: GraphSpectrum, log_g: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """sum_i log G_i[x1_i, x2_i] for all pairs: (..., N, d), (..., M, d) -> (..., N, M).

    log_g is (..., d, m, m); batch dimensions broadcast.
    """
    rows = torch.einsum("...nim,...imk->...nik", spectrum.one_hot(x1), log_g)  # log G_i[x1_i, :]
    return rows.flatten(-2) @ spectrum.one_hot(x2).flatten(-2).transpose(-1, -2)


def log_gram_diag(spectrum: GraphSpectrum, log_g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i log G_i[x_i, x_i]: (..., N, d) -> (..., N)."""
    diag = log_g.diagonal(dim1=-2, dim2=-1).flatten(-2)  # (..., d * m)
    return (spectrum.one_hot(x).flatten(-2) @ diag.unsqueeze(-1)).squeeze(-1)


def pair_log_factors(spectrum: GraphSpectrum, log_g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Every variable's log factor between all pairs of the n points x (n, d): (d, n, n).

    Used by the hyperparameter sampler, which changes one beta at a time and keeps the others' sum.
    """
    idx = x.round().long().T  # (d, n)
    d = idx.shape[0]
    return log_g[torch.arange(d)[:, None, None], idx[:, :, None], idx[:, None, :]]


class DiffusionKernel(gpytorch.kernels.Kernel):
    """ARD diffusion kernel on the product of the variables' graphs, one log beta per variable.

    Inputs are value indices (as floats, gpytorch's convention), shape (..., n, d). With
    ``batch_shape=(S,)`` the kernel holds S hyperparameter samples at once (log_beta is (S, d)). The
    signal variance is not part of it: wrap it in a `gpytorch.kernels.ScaleKernel`.
    """

    has_lengthscale = False

    def __init__(self, spectrum: GraphSpectrum, batch_shape: torch.Size | None = None, **kwargs):
        batch_shape = torch.Size() if batch_shape is None else torch.Size(batch_shape)
        super().__init__(batch_shape=batch_shape, **kwargs)
        self.spectrum = spectrum
        self.register_parameter("log_beta", torch.nn.Parameter(torch.zeros(*batch_shape, spectrum.d,
                                                                            dtype=torch.float64)))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params) -> torch.Tensor:
        if last_dim_is_batch:
            raise NotImplementedError("DiffusionKernel: last_dim_is_batch is not supported")
        log_g = self.spectrum.log_factors(self.log_beta)
        if diag:
            return log_gram_diag(self.spectrum, log_g, x1).exp()
        return log_gram(self.spectrum, log_g, x1, x2).exp()
