r"""Ranks of weight matrices and the low-rank certificate of SGD with weight decay.

Chapter: ``chapters/rank-minimization`` (Galanti, Siegel, Gupte and Poggio, arXiv:2206.05794).
Convention: PyTorch's ``SGD(weight_decay=wd)`` step is :math:`W \leftarrow (1-\mu\,\mathrm{wd})W - \mu G`,
so the paper's :math:`\lambda\|W\|_F^2` penalty is :math:`\mathrm{wd} = 2\lambda`. Singular values are
computed in float64 and sorted :math:`\sigma_1 \ge \sigma_2 \ge \dots`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def conv_kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    r"""A convolution kernel :math:`C_{out}\times C_{in}\times k\times k` reshaped to
    :math:`C_{out}\times C_{in}k^2` (the rank used for convolutions in the chapter)."""
    if weight.ndim != 4:
        raise ValueError(f"weight: expected a 4-d convolution kernel, got shape {tuple(weight.shape)}")
    return weight.reshape(weight.shape[0], -1)


def as_matrix(weight: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A float64 matrix: 2-d weights as they are, convolution kernels reshaped."""
    tensor = torch.as_tensor(weight).detach().to(torch.float64).cpu()
    if tensor.ndim == 4:
        return conv_kernel_matrix(tensor)
    if tensor.ndim != 2:
        raise ValueError(f"weight: expected a matrix or a 4-d kernel, got shape {tuple(tensor.shape)}")
    return tensor


def singular_values(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    r""":math:`\sigma_1 \ge \sigma_2 \ge \dots` of ``weight`` (float64; kernels reshaped)."""
    return torch.linalg.svdvals(as_matrix(weight)).numpy()


def _check_eps(eps: float) -> float:
    if not 0 < eps < 1:
        raise ValueError(f"eps: got {eps!r}, expected a number in (0, 1)")
    return eps


def count_rank(weight, eps: float) -> int:
    r"""Count rank :math:`\#\{i : \sigma_i/\|W\|_F > \varepsilon\}` (the paper's code, D1)."""
    s = singular_values(weight)
    return int(np.count_nonzero(s > _check_eps(eps) * np.sqrt(np.sum(s ** 2))))


def tail_rank(weight, eps: float) -> int:
    r"""Tail rank :math:`\min\{r : \sum_{i>r}\sigma_i^2 \le \varepsilon^2\|W\|_F^2\}`: by Eckart–Young the
    smallest rank within relative Frobenius distance :math:`\varepsilon` of :math:`W` (D1)."""
    s2 = singular_values(weight) ** 2
    tails = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tails[r] = sum_{i > r} sigma_i^2
    return int(np.argmax(tails <= _check_eps(eps) ** 2 * s2.sum()))


def stable_rank(weight) -> float:
    r"""Stable rank :math:`\|W\|_F^2 / \sigma_1^2`."""
    s = singular_values(weight)
    return float(np.sum(s ** 2) / s[0] ** 2)


def numerical_rank(weight, rtol: float) -> int:
    r""":math:`\#\{i : \sigma_i > \text{rtol}\cdot\sigma_1\}`, the rank of a matrix known to rounding ``rtol``."""
    s = singular_values(weight)
    return int(np.count_nonzero(s > rtol * s[0])) if s[0] > 0 else 0


def decay_factor(lrs: Sequence[float], wd: float) -> float:
    r""":math:`c_n = \prod_t (1 - \mu_t\,\mathrm{wd})` over the learning rates of the last :math:`n` steps (L3)."""
    return float(np.prod([1.0 - lr * wd for lr in lrs]))


def steps_for_rank(eps: float, kappa: float, lr: float, wd: float) -> int:
    r"""The window of C1: :math:`n = \lceil \log(\kappa/\varepsilon) / (-\log(1-\mu\,\mathrm{wd}))\rceil`, the least
    :math:`n` with :math:`(1-\mu\,\mathrm{wd})^n\kappa \le \varepsilon`."""
    if not 0 < lr * wd < 1:
        raise ValueError(f"lr * wd: got {lr * wd!r}, expected a number in (0, 1) (without weight decay no bound holds)")
    if kappa < eps:
        return 0
    return math.ceil(math.log(kappa / _check_eps(eps)) / -math.log1p(-lr * wd))


def rank_bound(batch: int, uses: int, lr: float, wd: float, eps: float, kappa: float) -> int:
    r"""C1: :math:`\mathrm{rank}^{\rm tail}_\varepsilon(W_T/\|W_T\|_F) \le BR\,n` with :math:`n` from
    :func:`steps_for_rank`, given the norm ratio :math:`\|W_{T-n}\|_F \le \kappa\|W_T\|_F`."""
    if batch < 1 or uses < 1:
        raise ValueError(f"batch and uses must be positive integers, got {batch} and {uses}")
    return batch * uses * steps_for_rank(eps, kappa, lr, wd)


@dataclass(frozen=True)
class Certificate:
    """T1 on a real run: the unrolling residual, the certified distance and the measured rank."""

    window: int
    rank_budget: int
    epsilon: float
    tail_rank: int
    sum_rank: int
    unrolling_residual: float

    @property
    def holds(self) -> bool:
        return self.tail_rank <= self.rank_budget and self.sum_rank <= self.rank_budget


def certificate(w_start, w_end, update_sum, decay: float, window: int, rank_per_step: int,
                rtol: float = 1e-5) -> Certificate:
    r"""T1: with :math:`W_T = c_n W_{T-n} + S_T` (L3), :math:`S_T` a sum of :math:`n` updates of rank
    :math:`\le BR` each, :math:`\mathrm{rank}^{\rm tail}_{\varepsilon_n}(W_T) \le nBR` for
    :math:`\varepsilon_n = c_n\|W_{T-n}\|_F/\|W_T\|_F`.

    Returns :math:`\varepsilon_n`, the budget :math:`nBR`, the measured tail rank of :math:`W_T` at
    :math:`\varepsilon_n`, the numerical rank of :math:`S_T` at relative tolerance ``rtol`` (float32
    gradients carry rounding near 1e-7), and the relative residual
    :math:`\|W_T - c_nW_{T-n} - S_T\|_F/\|W_T\|_F` of the identity L3.
    """
    start, end, total = as_matrix(w_start), as_matrix(w_end), as_matrix(update_sum)
    end_norm = float(torch.linalg.matrix_norm(end))
    epsilon = decay * float(torch.linalg.matrix_norm(start)) / end_norm
    residual = float(torch.linalg.matrix_norm(end - decay * start - total)) / end_norm
    budget = window * rank_per_step
    measured = tail_rank(end, epsilon) if 0 < epsilon < 1 else min(end.shape)
    return Certificate(window=window, rank_budget=budget, epsilon=epsilon, tail_rank=measured,
                       sum_rank=numerical_rank(total, rtol), unrolling_residual=residual)


def near_convergence_distance(weight, batch_gradient, wd: float) -> float:
    r"""L4: :math:`\|W + \nabla L_{\rm batch}/\mathrm{wd}\|_F / \|W\|_F
    = \|\nabla(L_{\rm batch} + \tfrac{\mathrm{wd}}2\|W\|_F^2)\|_F / (\mathrm{wd}\,\|W\|_F)`.

    :math:`-\nabla L_{\rm batch}/\mathrm{wd}` has rank at most :math:`BR`, so a small value certifies that
    :math:`W` is that close to a matrix of rank :math:`BR`; it is small only near a stationary point of the
    regularised batch loss.
    """
    if not wd > 0:
        raise ValueError(f"wd: got {wd!r}, expected a positive weight decay")
    w, g = as_matrix(weight), as_matrix(batch_gradient)
    return float(torch.linalg.matrix_norm(w + g / wd) / torch.linalg.matrix_norm(w))
