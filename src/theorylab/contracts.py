"""Contract design as a bilevel max-max problem, solved with implicit hypergradients.

Chapter: ``chapters/contract-design`` (Galanti, Bookseller and Ray, arXiv:2510.21177).

A principal picks a contract :math:`\\theta`; the agent answers with an action
:math:`a^*(\\theta)` that zeroes its first-order map :math:`G(\\theta, a)` (the gradient of its
certainty equivalent, or the stacked own-gradients of several agents in a game). The principal's
profit :math:`F(\\theta, a)` already has the fixed wage eliminated by the binding participation
constraint. By the implicit function theorem (eq. ``hypergradient`` of the chapter)

.. math:: \\frac{dF}{d\\theta} = \\nabla_\\theta F + \\partial_\\theta G^\\top v,\\qquad (-J)^\\top v = \\nabla_a F,
          \\quad J = \\partial_a G,

and for one agent :math:`J = \\nabla^2_{aa} U \\prec 0`, so :math:`v` is found by conjugate gradients on
:math:`-J`, with Hessian-vector products from ``torch.func.jvp``; no Hessian is ever formed.

All tensors are float64. Environments are small classes holding model constants; everything else
is a pure function.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import numpy as np
import torch
from torch.func import grad, jvp, linearize, vjp

DTYPE = torch.float64
SQRT_PI = math.sqrt(math.pi)
PROFIT_RESOLUTION = 1e-12


class BestResponseError(RuntimeError):
    """The agent's problem has no (local) maximiser at this contract."""


class NotPositiveDefinite(RuntimeError):
    """CG met a direction of non-positive curvature: the second-order condition fails."""


# --------------------------------------------------------------------------------------------
# Linear solvers
# --------------------------------------------------------------------------------------------

@dataclass
class CGResult:
    x: torch.Tensor
    iterations: int
    residual_norm: float
    converged: bool


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, *,
                       x0: torch.Tensor | None = None, rtol: float = 1e-12, atol: float = 0.0,
                       maxiter: int | None = None,
                       callback: Callable[[torch.Tensor], None] | None = None) -> CGResult:
    """Solve :math:`A x = b` for symmetric positive definite :math:`A` given only :math:`x\\mapsto Ax`.

    Stops when :math:`\\|b - Ax\\|_2 \\le \\max(\\text{rtol}\\,\\|b\\|_2, \\text{atol})`. Each step checks the
    curvature :math:`p^\\top A p > 0` and raises :class:`NotPositiveDefinite` otherwise, since CG on an
    indefinite operator (the Hessian of a max problem, not its negative) returns garbage silently.
    ``callback(x_k)`` is called after every iteration (used to measure the error curve, eq. S8).
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - matvec(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = torch.dot(r, r)
    threshold = max(rtol * float(torch.linalg.vector_norm(rhs)), atol)
    maxiter = 10 * rhs.numel() if maxiter is None else maxiter
    k = 0
    while math.sqrt(float(rr)) > threshold and k < maxiter:
        ap = matvec(p)
        curvature = torch.dot(p, ap)
        if not float(curvature) > 0:
            raise NotPositiveDefinite(f"CG found p^T A p = {float(curvature):.3e} <= 0 at iteration {k}")
        step = rr / curvature
        x = x + step * p
        r = r - step * ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        k += 1
        if callback is not None:
            callback(x)
    residual = math.sqrt(float(rr))
    return CGResult(x=x, iterations=k, residual_norm=residual, converged=residual <= threshold)


def cg_error_bound(condition_number: float, iterations: np.ndarray) -> np.ndarray:
    """Eq. S8: :math:`\\|e_k\\|_A / \\|e_0\\|_A \\le 2\\big(\\tfrac{\\sqrt\\kappa-1}{\\sqrt\\kappa+1}\\big)^k`."""
    root = math.sqrt(condition_number)
    return 2.0 * ((root - 1.0) / (root + 1.0)) ** np.asarray(iterations, dtype=float)


def cg_error_curve(matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                   exact: torch.Tensor, iterations: int) -> np.ndarray:
    """Relative :math:`A`-norm error :math:`\\|x_k - x^*\\|_A / \\|x^*\\|_A` for :math:`k = 0..` ``iterations``."""
    def a_norm(e: torch.Tensor) -> float:
        return math.sqrt(float(torch.dot(e, matvec(e))))

    errors = [1.0]
    scale = a_norm(exact)
    conjugate_gradient(matvec, rhs, rtol=0.0, maxiter=iterations,
                       callback=lambda x: errors.append(a_norm(x - exact) / scale))
    return np.array(errors)


def _gmres_solve(matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                 rtol: float) -> tuple[torch.Tensor, int, bool]:
    """Solve a non-symmetric system with SciPy's GMRES (``rtol`` keyword: SciPy >= 1.12)."""
    from scipy.sparse.linalg import LinearOperator, gmres

    n = rhs.numel()
    counter = {"calls": 0}

    def apply(x: np.ndarray) -> np.ndarray:
        counter["calls"] += 1
        return matvec(torch.as_tensor(np.ravel(x), dtype=rhs.dtype, device=rhs.device)).cpu().numpy()

    operator = LinearOperator((n, n), matvec=apply, dtype=np.float64)
    solution, info = gmres(operator, rhs.cpu().numpy(), rtol=rtol, atol=0.0, maxiter=10 * n)
    return torch.as_tensor(solution, dtype=rhs.dtype, device=rhs.device), counter["calls"], info == 0


# --------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------

def _positive(name: str, value: Any) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _tensor(values: Any, device: Any = "cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=DTYPE, device=device)


class ContractEnv:
    """A principal-agent model. Subclasses define the three maps of the bilevel problem.

    - ``agent_utility(theta, a)``: the agent's certainty equivalent less the fixed wage;
    - ``first_order(theta, a)``: the map whose zero is the best response (default: the gradient of
      ``agent_utility``); ``symmetric_jacobian`` says whether its Jacobian is symmetric;
    - ``principal_profit(theta, a)``: expected output less expected wage, with the fixed wage set by
      the binding participation constraint (reservation CE 0).
    """

    contract_names: tuple[str, ...] = ("beta",)
    symmetric_jacobian = True
    device: Any = "cpu"

    def agent_utility(self, theta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def principal_profit(self, theta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def first_order(self, theta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return grad(self.agent_utility, argnums=1)(theta, a)

    def initial_action(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, dtype=DTYPE, device=theta.device)

    def best_response(self, theta: torch.Tensor, a0: torch.Tensor | None = None) -> torch.Tensor:
        return newton_best_response(self, theta, self.initial_action(theta) if a0 is None else a0)

    def project(self, theta: torch.Tensor) -> torch.Tensor:
        return theta

    def random_contract(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 2.0, size=len(self.contract_names))

    def named(self, theta: np.ndarray) -> dict[str, Any]:
        """The contract's parts by name (``beta``, ``gamma``, ...)."""
        return {name: float(theta[i]) for i, name in enumerate(self.contract_names)}


def newton_best_response(env: ContractEnv, theta: torch.Tensor, a0: torch.Tensor, *,
                         tol: float = 1e-12, max_iter: int = 50) -> torch.Tensor:
    """Newton's method on the agent's first-order map, each step solved by CG on :math:`-\\nabla^2_{aa}U`.

    Stops when the RMS of :math:`G(\\theta, a)` is below ``tol``. A non-concave direction raises
    :class:`NotPositiveDefinite` (the agent's second-order condition fails).
    """
    a = a0
    scale = math.sqrt(a.numel())
    for _ in range(max_iter):
        g = env.first_order(theta, a)
        if float(torch.linalg.vector_norm(g)) <= tol * scale:
            return a
        neg_hessian = _negative_jacobian_product(env, theta, a)
        a = a + conjugate_gradient(neg_hessian, g, rtol=1e-3 * tol, atol=0.1 * tol * scale).x
    raise BestResponseError(f"Newton's method for the best response did not converge in {max_iter} steps")


def _negative_jacobian_product(env: ContractEnv, theta: torch.Tensor, a: torch.Tensor
                               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """:math:`u \\mapsto -J u`, with :math:`J = \\partial_a G(\\theta, a)` by forward-mode autodiff.

    Where ``env.constant_jacobian`` says :math:`G` is affine in :math:`a` with a Jacobian that does not
    depend on :math:`\\theta` either (multi-task Holmström–Milgrom: :math:`J = -C`), the forward pass is
    traced once per environment with :func:`torch.func.linearize` and replayed: the same autodiff
    product, without re-tracing on every CG step (about 4x cheaper at :math:`n = 10^5`; see the benchmark).
    """
    if getattr(env, "constant_jacobian", False):
        linear = env.__dict__.get("_linearized_first_order")
        if linear is None or linear[0] != a.shape or linear[1] != a.device:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer warns about the constants it folds
                tangent_map = linearize(lambda x: env.first_order(theta, x), a)[1]
            linear = (a.shape, a.device, tangent_map)
            env._linearized_first_order = linear
        return lambda u: -linear[2](u)

    def product(u: torch.Tensor) -> torch.Tensor:
        return -jvp(lambda x: env.first_order(theta, x), (a,), (u,))[1]
    return product


class CaraNormal(ContractEnv):
    """Single-task Holmström–Milgrom (S2): :math:`x = a + \\varepsilon`, :math:`w = \\alpha + \\beta x`.

    CE less :math:`\\alpha`: :math:`\\beta a - c a^2/2 - \\mathrm{RP}(\\beta)`, with the risk premium
    :math:`\\mathrm{RP} = r\\beta^2\\sigma^2/2`, or, when ``noise`` draws are given (S9), its sample-average
    approximation :math:`\\mathrm{RP}_N = \\beta\\bar\\varepsilon + r^{-1}\\log\\frac1N\\sum_k e^{-r\\beta\\varepsilon_k}
    = r^{-1}\\log\\frac1N\\sum_k e^{-r\\beta(\\varepsilon_k-\\bar\\varepsilon)}`: expected wage less CE, both
    estimated from the same draws (this is what sampling output and wage in the whole problem gives,
    up to a constant in profit).
    Profit :math:`a - c a^2/2 - \\mathrm{RP}`; best response :math:`a^* = \\beta / c`.

    ``noise`` of shape ``(R, N)`` holds ``R`` independent replications of ``N`` draws: the contract is
    then a vector of ``R`` bonuses and the profit their sum, a separable problem whose maximiser is
    each replication's own maximiser, solved in one vectorised run.
    """

    def __init__(self, r: float, c: float, sigma2: float, noise: np.ndarray | None = None,
                 device: Any = "cpu"):
        self.r, self.c = _positive("r", r), _positive("c", c)
        self.sigma2 = _positive("sigma2", sigma2)
        self.device = device
        self.noise = None
        if noise is not None:
            draws = np.asarray(noise, dtype=np.float64)
            draws = draws.reshape(1, -1) if draws.ndim == 1 else draws
            if draws.ndim != 2 or draws.shape[1] == 0:
                raise ValueError(f"noise must have shape (N,) or (R, N) with N >= 1, got {np.shape(noise)}")
            self.noise = _tensor(draws, device)
            self.contract_names = tuple(f"beta_{i}" for i in range(draws.shape[0])) \
                if draws.shape[0] > 1 else ("beta",)

    def risk_premium(self, beta: torch.Tensor) -> torch.Tensor:
        if self.noise is None:
            return self.r * beta ** 2 * self.sigma2 / 2
        centred = self.noise - self.noise.mean(dim=1, keepdim=True)
        log_mean = torch.logsumexp(-self.r * beta.reshape(-1, 1) * centred, dim=1) - math.log(centred.shape[1])
        return log_mean / self.r

    def agent_utility(self, theta, a):
        return torch.sum(theta * a - self.c * a ** 2 / 2 - self.risk_premium(theta))

    def principal_profit(self, theta, a):
        return torch.sum(a - self.c * a ** 2 / 2 - self.risk_premium(theta))

    def best_response(self, theta, a0=None):
        return theta / self.c

    def named(self, theta):
        if len(self.contract_names) > 1:
            return {"beta": np.asarray(theta, dtype=float)}
        return {"beta": float(theta[0])}

    def optimum(self) -> dict[str, float]:
        """Closed form (S2): :math:`\\beta^* = 1/(1+rc\\sigma^2)`, :math:`\\Pi^* = 1/(2c(1+rc\\sigma^2))`."""
        k = 1 + self.r * self.c * self.sigma2
        return {"beta": 1 / k, "profit": 1 / (2 * self.c * k),
                "alpha": (self.r * self.c * self.sigma2 - 1) / (2 * self.c * k ** 2)}

    def profit_gradient(self, beta: float) -> float:
        """:math:`\\Pi'(\\beta) = (1 - \\beta(1 + rc\\sigma^2))/c` (exact risk premium only)."""
        return (1 - beta * (1 + self.r * self.c * self.sigma2)) / self.c


class Tridiagonal:
    """A symmetric tridiagonal matrix, stored as its diagonal and off-diagonal (for :math:`C`)."""

    def __init__(self, diag: Any, off: Any):
        self.diag = np.asarray(diag, dtype=np.float64)
        self.off = np.asarray(off, dtype=np.float64)
        if self.diag.ndim != 1 or self.off.shape != (self.diag.size - 1,):
            raise ValueError(f"C: a tridiagonal matrix needs diag of shape (n,) and off of shape (n-1,), "
                             f"got {self.diag.shape} and {self.off.shape}")

    @property
    def n(self) -> int:
        return self.diag.size

    def to_scipy(self):
        from scipy.sparse import diags
        return diags([self.off, self.diag, self.off], [-1, 0, 1], format="csr")

    def is_positive_definite(self) -> bool:
        from scipy.linalg import cholesky_banded
        try:
            cholesky_banded(np.vstack([np.r_[0.0, self.off], self.diag]))
            return True
        except np.linalg.LinAlgError:
            return False

    @staticmethod
    def with_condition_number(n: int, kappa: float) -> Tridiagonal:
        """Toeplitz :math:`\\mathrm{tridiag}(-1, d, -1)` with :math:`(d+2)/(d-2) = \\kappa`.

        Its eigenvalues :math:`d - 2\\cos(k\\pi/(n+1))` fill :math:`(d-2, d+2)`, so its condition
        number tends to :math:`\\kappa` from below as :math:`n` grows.
        """
        d = 2 * (kappa + 1) / (kappa - 1)
        return Tridiagonal(np.full(n, d), np.full(n - 1, -1.0))


def _check_spd(name: str, matrix: np.ndarray, n: int | None = None) -> np.ndarray:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {matrix.shape}")
    if n is not None and matrix.shape[0] != n:
        raise ValueError(f"{name} has shape {matrix.shape}, expected ({n}, {n})")
    if not np.allclose(matrix, matrix.T, rtol=1e-12, atol=1e-12):
        raise ValueError(f"{name} must be symmetric")
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} must be positive definite") from None
    return matrix


class MultiTaskCaraNormal(ContractEnv):
    """Multi-task Holmström–Milgrom (S3): :math:`x = a + \\varepsilon \\in \\mathbb R^n`,
    :math:`\\varepsilon \\sim N(0, \\Sigma)`, wage :math:`\\alpha + \\beta^\\top x`, cost :math:`a^\\top C a/2`,
    benefit :math:`b^\\top a`.

    CE less :math:`\\alpha`: :math:`\\beta^\\top a - a^\\top C a/2 - r\\beta^\\top\\Sigma\\beta/2`; profit
    :math:`b^\\top a - a^\\top C a/2 - r\\beta^\\top\\Sigma\\beta/2`. ``C`` is a dense SPD array or a
    :class:`Tridiagonal`; ``Sigma`` a dense SPD array or a vector of variances (diagonal).
    The first-order map :math:`G = \\beta - Ca` is written out (it is linear), so a Hessian-vector
    product is one forward-mode pass through a matrix-vector product, traced once
    (``constant_jacobian``).
    """

    constant_jacobian = True

    def __init__(self, r: float, C: Any, Sigma: Any, b: Any, device: Any = "cpu"):
        self.r = _positive("r", r)
        self.device = device
        self.b_np = np.asarray(b, dtype=np.float64)
        if self.b_np.ndim != 1:
            raise ValueError(f"b must be a vector, got shape {self.b_np.shape}")
        n = self.b_np.size
        if isinstance(C, Tridiagonal):
            if C.n != n:
                raise ValueError(f"C has size {C.n}, but b has {n} entries")
            if not C.is_positive_definite():
                raise ValueError("C must be positive definite")
            self.C = C
            diag, off = _tensor(C.diag, device), _tensor(C.off, device)
            self._cost_matvec = lambda a: diag * a + torch.cat([off * a[1:], a.new_zeros(1)]) \
                + torch.cat([a.new_zeros(1), off * a[:-1]])
        else:
            self.C = _check_spd("C", np.asarray(C, dtype=np.float64), n)
            dense_c = _tensor(self.C, device)
            self._cost_matvec = lambda a: dense_c @ a
        sigma = np.asarray(Sigma, dtype=np.float64)
        if sigma.ndim == 1:
            if sigma.shape != (n,):
                raise ValueError(f"Sigma has shape {sigma.shape}, expected ({n},) or ({n}, {n})")
            if not np.all(sigma > 0):
                raise ValueError("Sigma must be positive definite (its diagonal variances positive)")
            variances = _tensor(sigma, device)
            self._noise_matvec = lambda beta: variances * beta
        else:
            _check_spd("Sigma", sigma, n)
            dense_sigma = _tensor(sigma, device)
            self._noise_matvec = lambda beta: dense_sigma @ beta
        self.Sigma = sigma
        self.b = _tensor(self.b_np, device)
        self.contract_names = tuple(f"beta_{i}" for i in range(n))

    @property
    def n(self) -> int:
        return self.b_np.size

    def agent_utility(self, theta, a):
        return theta @ a - a @ self._cost_matvec(a) / 2 - self.r * theta @ self._noise_matvec(theta) / 2

    def principal_profit(self, theta, a):
        return self.b @ a - a @ self._cost_matvec(a) / 2 - self.r * theta @ self._noise_matvec(theta) / 2

    def first_order(self, theta, a):
        return theta - self._cost_matvec(a)

    def initial_action(self, theta):
        return torch.zeros_like(theta)

    def named(self, theta):
        return {"beta": np.asarray(theta, dtype=float)}

    def _dense(self, matrix: Any) -> np.ndarray:
        if isinstance(matrix, Tridiagonal):
            return matrix.to_scipy().toarray()
        return np.diag(matrix) if np.ndim(matrix) == 1 else np.asarray(matrix)

    def optimum_beta(self) -> np.ndarray:
        """Closed form (S3): :math:`\\beta^* = (I + rC\\Sigma)^{-1} b`, by a sparse direct solve when
        :math:`C` is tridiagonal and :math:`\\Sigma` diagonal, else by a dense solve."""
        if isinstance(self.C, Tridiagonal) and self.Sigma.ndim == 1:
            from scipy.sparse import diags, identity
            from scipy.sparse.linalg import spsolve
            system = identity(self.n, format="csc") + self.r * (self.C.to_scipy() @ diags(self.Sigma)).tocsc()
            return spsolve(system.tocsc(), self.b_np)
        system = np.eye(self.n) + self.r * self._dense(self.C) @ self._dense(self.Sigma)
        return np.linalg.solve(system, self.b_np)

    def optimum_profit(self) -> float:
        """:math:`S^* = \\tfrac12 b^\\top (C + rC\\Sigma C)^{-1} b` (dense; small ``n`` only)."""
        c, s = self._dense(self.C), self._dense(self.Sigma)
        return 0.5 * float(self.b_np @ np.linalg.solve(c + self.r * c @ s @ c, self.b_np))

    def profit_gradient(self, beta: np.ndarray) -> np.ndarray:
        """:math:`\\nabla S = -r\\Sigma\\beta + C^{-1}(b - \\beta)` (dense; small ``n`` only)."""
        c, s = self._dense(self.C), self._dense(self.Sigma)
        return -self.r * s @ beta + np.linalg.solve(c, self.b_np - beta)


def _poisson_phi(r: float, beta: torch.Tensor) -> torch.Tensor:
    """:math:`\\varphi(\\beta) = (1 - e^{-r\\beta})/r`: the CE of a Poisson bonus per unit intensity."""
    return -torch.expm1(-r * beta) / r


class CaraPoisson(ContractEnv):
    """CARA–Poisson with the well-posed cost (S4, P1): :math:`X \\mid a \\sim \\mathrm{Poisson}(e^a)`,
    :math:`w = \\alpha + \\beta X`, :math:`C(a) = c e^{2a}/2`.

    CE less :math:`\\alpha`: :math:`e^a\\varphi(\\beta) - c e^{2a}/2`; profit
    :math:`e^a - c e^{2a}/2 - e^a(\\beta - \\varphi)`; best response :math:`a^* = \\log(\\varphi/c)`
    for :math:`\\beta > 0` (none for :math:`\\beta \\le 0`).
    """

    min_beta = 1e-6

    def __init__(self, r: float, c: float, device: Any = "cpu"):
        self.r, self.c = _positive("r", r), _positive("c", c)
        self.device = device

    def agent_utility(self, theta, a):
        return torch.exp(a[0]) * _poisson_phi(self.r, theta[0]) - self.c * torch.exp(2 * a[0]) / 2

    def principal_profit(self, theta, a):
        lam, phi = torch.exp(a[0]), _poisson_phi(self.r, theta[0])
        return lam - self.c * lam ** 2 / 2 - lam * (theta[0] - phi)

    def best_response(self, theta, a0=None):
        phi = _poisson_phi(self.r, theta[:1])
        if not float(phi) > 0:
            raise BestResponseError(f"no best response for beta = {float(theta[0]):.3g} <= 0")
        return torch.log(phi / self.c)

    def project(self, theta):
        return theta.clamp(min=self.min_beta)

    def random_contract(self, rng):
        return rng.uniform(0.05, 2.0, size=1)

    def foc(self, beta: float) -> float:
        """Principal's FOC (P1) in :math:`y = e^{-r\\beta}`: :math:`ry(1-\\beta) - (1-y)^2`."""
        y = math.exp(-self.r * beta)
        return self.r * y * (1 - beta) - (1 - y) ** 2

    def optimum_beta(self) -> float:
        """The unique root of :meth:`foc` in :math:`(0, 1)`, by Brent's method (the oracle)."""
        from scipy.optimize import brentq
        return brentq(self.foc, 1e-12, 1.0, xtol=1e-15, rtol=1e-15)

    def profit_gradient(self, beta: float) -> float:
        """:math:`\\Pi'(\\beta) = [y(1 + \\varphi - \\beta) - \\varphi]/c`, :math:`y = e^{-r\\beta}`."""
        y = math.exp(-self.r * beta)
        phi = (1 - y) / self.r
        return (y * (1 + phi - beta) - phi) / self.c


class CaraPoissonQuadraticCost(CaraPoisson):
    """The ill-posed variant (S4, P2): cost :math:`c a^2/2` instead of :math:`c e^{2a}/2`.

    The agent's CE :math:`e^a\\varphi - c a^2/2` is unbounded above, so no global best response
    exists. :meth:`best_response` returns the local maximiser :math:`a = -W_0(-\\varphi/c)`, which
    exists only while :math:`\\varphi/c \\le 1/e`, and raises :class:`BestResponseError` beyond.
    """

    def agent_utility(self, theta, a):
        return torch.exp(a[0]) * _poisson_phi(self.r, theta[0]) - self.c * a[0] ** 2 / 2

    def principal_profit(self, theta, a):
        lam, phi = torch.exp(a[0]), _poisson_phi(self.r, theta[0])
        return lam - self.c * a[0] ** 2 / 2 - lam * (theta[0] - phi)

    def best_response(self, theta, a0=None):
        from scipy.special import lambertw
        ratio = float(_poisson_phi(self.r, theta[:1])) / self.c
        if ratio > math.exp(-1):
            raise BestResponseError(f"no local best response: phi/c = {ratio:.6f} > 1/e")
        local = -lambertw(-ratio, 0).real
        return torch.tensor([local], dtype=DTYPE, device=theta.device)

    def edge_beta(self) -> float:
        """The contract where :math:`\\varphi(\\beta)/c = 1/e` and the agent's SOC fails (if any)."""
        target = self.c * math.exp(-1) * self.r
        return math.inf if target >= 1 else -math.log1p(-target) / self.r


def normal_trapezoid(n_nodes: int, half_width: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the trapezoid rule for :math:`\\mathbb E f(Z)`, :math:`Z \\sim N(0,1)`, on
    :math:`[-L, L]`. For integrands analytic in a strip of half-width :math:`d` (a sigmoid of slope
    :math:`\\gamma` has :math:`d = \\pi/\\gamma`) the error falls like :math:`e^{-2\\pi d/h}` in the spacing
    :math:`h`, which beats Gauss–Hermite on steep sigmoids."""
    z = np.linspace(-half_width, half_width, n_nodes)
    return z, (z[1] - z[0]) * np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)


def gauss_hermite(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes :math:`z_k` and weights :math:`w_k` with :math:`\\mathbb E f(Z) \\approx \\sum_k w_k f(z_k)`,
    :math:`Z \\sim N(0,1)` (Gauss–Hermite, rescaled)."""
    t, w = np.polynomial.hermite.hermgauss(n_nodes)
    return math.sqrt(2.0) * t, w / SQRT_PI


class CappedLogisticPay(ContractEnv):
    """Logistic pay (S5): :math:`w = \\alpha + \\beta\\,\\mathrm{sigmoid}(\\gamma(x-\\kappa))`,
    :math:`x = a + \\varepsilon`, :math:`\\varepsilon \\sim N(0, \\sigma^2)`, cost :math:`c a^2/2`,
    bonus capped by :math:`0 \\le \\beta \\le B` (``cap``; ``math.inf`` for none).

    With :math:`g = w - \\alpha`: CE less :math:`\\alpha` is :math:`-r^{-1}\\log\\mathbb E e^{-rg} - ca^2/2`;
    profit :math:`a - ca^2/2 - \\mathrm{RP}`, :math:`\\mathrm{RP} = \\mathbb E g + r^{-1}\\log\\mathbb E e^{-rg}`.
    Expectations by the trapezoid rule on :math:`\\pm 8.5\\sigma` (:func:`normal_trapezoid`), with a
    spacing fine enough for an error near :math:`10^{-13}` at every slope
    :math:`\\gamma\\sigma \\le` ``max_slope``, which the projection enforces (a bound reported by the KKT
    residual where it binds). The agent's problem need not be
    concave, so the best response is a global grid search polished by Newton's method.
    """

    contract_names = ("beta", "gamma", "kappa")
    min_gamma = 1e-3
    half_width = 8.5

    def __init__(self, r: float, c: float, sigma: float, cap: float = math.inf, *,
                 max_slope: float = 8.0, device: Any = "cpu"):
        self.r, self.c, self.sigma = _positive("r", r), _positive("c", c), _positive("sigma", sigma)
        cap = float(cap)
        if not cap > 0:
            raise ValueError(f"cap must be positive (or math.inf), got {cap!r}")
        self.cap = cap
        self.max_slope = _positive("max_slope", max_slope)
        self.device = device
        # Trapezoid error ~ exp(-2 pi^2 / (gamma sigma h)): spacing h keeps it below e^-30 ~ 1e-13
        # for every admissible slope gamma * sigma <= max_slope.
        spacing = 2 * math.pi ** 2 / (30.0 * self.max_slope)
        n_nodes = 2 * math.ceil(self.half_width / spacing) + 1
        nodes, weights = normal_trapezoid(n_nodes, self.half_width)
        self.nodes, self.weights = _tensor(nodes, device), _tensor(weights, device)
        self.log_weights = torch.log(self.weights)

    def _bonus(self, theta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = a.reshape(-1, 1) + self.sigma * self.nodes
        return theta[0] * torch.sigmoid(theta[1] * (x - theta[2]))

    def _log_mean_exp(self, bonus: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.log_weights - self.r * bonus, dim=-1)

    def agent_utilities(self, theta: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """CE less :math:`\\alpha` at each of several actions (a vector), for the grid search."""
        return -self._log_mean_exp(self._bonus(theta, actions)) / self.r - self.c * actions ** 2 / 2

    def agent_utility(self, theta, a):
        return self.agent_utilities(theta, a)[0]

    def first_order(self, theta, a):
        """The agent's FOC in its Esscher-tilt form (S5):
        :math:`G = \\mathbb E[g'e^{-rg}]/\\mathbb E[e^{-rg}] - ca`, with :math:`g' = \\beta\\gamma s(1-s)`."""
        s = torch.sigmoid(theta[1] * (a.reshape(-1, 1) + self.sigma * self.nodes - theta[2]))
        tilt = torch.softmax(self.log_weights - self.r * theta[0] * s, dim=-1)
        return (tilt * theta[0] * theta[1] * s * (1 - s)).sum(dim=-1) - self.c * a

    def principal_profit(self, theta, a):
        bonus = self._bonus(theta, a)[0]
        premium = self.weights @ bonus + self._log_mean_exp(bonus) / self.r
        return a[0] - self.c * a[0] ** 2 / 2 - premium

    def best_response(self, theta, a0=None):
        bound = math.sqrt(2 * float(theta[0].abs()) / self.c) + 1.0
        grid = torch.linspace(-bound, bound, 401, dtype=DTYPE, device=theta.device)
        start = grid[torch.argmax(self.agent_utilities(theta, grid))].reshape(1)
        return newton_best_response(self, theta, start)

    def project(self, theta):
        return torch.stack([theta[0].clamp(0.0, self.cap),
                            theta[1].clamp(self.min_gamma, self.max_slope / self.sigma), theta[2]])

    def random_contract(self, rng):
        top = min(self.cap, 4.0)
        return np.array([rng.uniform(0.2 * top, top), rng.uniform(0.3, 3.0), rng.uniform(-2.0, 1.0)])


class LinearRPE(ContractEnv):
    """Linear relative-performance evaluation (S6) for ``n_agents`` agents:
    :math:`x_i = a_i + \\eta + \\varepsilon_i`, :math:`w_i = \\alpha + \\beta(x_i - \\gamma\\bar x_{-i})`.

    Effort is a dominant strategy, so agent :math:`i`'s CE less :math:`\\alpha` is
    :math:`\\beta a - c a^2/2 - r\\beta^2 v(\\gamma)/2` with
    :math:`v(\\gamma) = (1-\\gamma)^2\\sigma_\\eta^2 + \\sigma^2(1 + \\gamma^2/(N-1))`; profit per agent
    :math:`a - ca^2/2 - r\\beta^2 v(\\gamma)/2`. Contract :math:`\\theta = (\\beta, \\gamma)`.
    """

    contract_names = ("beta", "gamma")

    def __init__(self, r: float, c: float, sigma: float, sigma_common: float, n_agents: int = 2,
                 device: Any = "cpu"):
        self.r, self.c, self.sigma = _positive("r", r), _positive("c", c), _positive("sigma", sigma)
        if not float(sigma_common) >= 0:
            raise ValueError(f"sigma_common must be non-negative, got {sigma_common!r}")
        if int(n_agents) != n_agents or n_agents < 2:
            raise ValueError(f"n_agents must be an integer >= 2, got {n_agents!r}")
        self.sigma_common, self.n_agents, self.device = float(sigma_common), int(n_agents), device

    def variance(self, gamma):
        return ((1 - gamma) ** 2 * self.sigma_common ** 2
                + self.sigma ** 2 * (1 + gamma ** 2 / (self.n_agents - 1)))

    def agent_utility(self, theta, a):
        return theta[0] * a[0] - self.c * a[0] ** 2 / 2 - self.r * theta[0] ** 2 * self.variance(theta[1]) / 2

    def principal_profit(self, theta, a):
        return a[0] - self.c * a[0] ** 2 / 2 - self.r * theta[0] ** 2 * self.variance(theta[1]) / 2

    def best_response(self, theta, a0=None):
        return theta[:1] / self.c

    def optimum(self) -> dict[str, float]:
        """Closed form (S6): :math:`\\gamma^*`, :math:`v^*`, :math:`\\beta^* = 1/(1+rcv^*)`, :math:`\\Pi^*`."""
        m, s2, e2 = self.n_agents - 1, self.sigma ** 2, self.sigma_common ** 2
        gamma = m * e2 / (m * e2 + s2)
        v = s2 * (self.n_agents * e2 + s2) / (m * e2 + s2)
        k = 1 + self.r * self.c * v
        return {"beta": 1 / k, "gamma": gamma, "variance": v, "profit": 1 / (2 * self.c * k)}


class Tournament(ContractEnv):
    """Two-agent rank-order tournament (S7): :math:`x_i = a_i + \\eta + \\varepsilon_i`, the higher output
    wins the prize spread :math:`\\Delta` over a common base wage; :math:`\\eta` cancels.

    With :math:`p_1 = \\Phi((a_1 - a_2)/(\\sigma\\sqrt2))`, agent :math:`i`'s CE less the base wage is
    :math:`-r^{-1}\\log(p_i e^{-r\\Delta} + 1 - p_i) - c a_i^2/2`; the inner problem is a Nash game,
    :math:`G = (\\partial_{a_1}U_1, \\partial_{a_2}U_2)` with a non-symmetric Jacobian (GMRES). Profit per
    agent: the mean of :math:`a_i - c a_i^2/2 - \\mathrm{RP}_i`,
    :math:`\\mathrm{RP}_i = p_i\\Delta + r^{-1}\\log(p_i e^{-r\\Delta} + 1 - p_i)`.
    The symmetric equilibrium is :math:`c a^* = \\tanh(r\\Delta/2)/(r\\sigma\\sqrt\\pi)`.
    """

    contract_names = ("prize_spread",)
    symmetric_jacobian = False

    def __init__(self, r: float, c: float, sigma: float, sigma_common: float = 0.0, device: Any = "cpu"):
        self.r, self.c, self.sigma = _positive("r", r), _positive("c", c), _positive("sigma", sigma)
        if not float(sigma_common) >= 0:
            raise ValueError(f"sigma_common must be non-negative, got {sigma_common!r}")
        self.sigma_common, self.device = float(sigma_common), device

    def _win_probabilities(self, a: torch.Tensor) -> torch.Tensor:
        p1 = torch.special.ndtr((a[0] - a[1]) / (self.sigma * math.sqrt(2.0)))
        return torch.stack([p1, 1 - p1])

    def _log_lottery(self, spread: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return torch.log1p(p * torch.expm1(-self.r * spread))

    def agent_utilities(self, theta: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        p = self._win_probabilities(a)
        return -self._log_lottery(theta[0], p) / self.r - self.c * a ** 2 / 2

    def agent_utility(self, theta, a):
        raise TypeError("a tournament has two agents: use agent_utilities")

    def first_order(self, theta, a):
        own = [grad(lambda x, i=i: self.agent_utilities(theta, x)[i])(a)[i] for i in range(2)]
        return torch.stack(own)

    def principal_profit(self, theta, a):
        p = self._win_probabilities(a)
        premium = p * theta[0] + self._log_lottery(theta[0], p) / self.r
        return torch.mean(a - self.c * a ** 2 / 2 - premium)

    def best_response(self, theta, a0=None):
        effort = torch.tanh(self.r * theta[0] / 2) / (self.c * self.r * self.sigma * SQRT_PI)
        return effort.reshape(1).repeat(2)

    def initial_action(self, theta):
        return torch.zeros(2, dtype=DTYPE, device=theta.device)

    def project(self, theta):
        return theta.clamp(min=0.0)

    def random_contract(self, rng):
        return rng.uniform(0.1, 3.0, size=1)

    def cubic(self) -> tuple[float, float]:
        """:math:`(A, B) = (1/(c\\sigma\\sqrt\\pi),\\ 1/(cr\\sigma^2\\pi))` of the FOC
        :math:`Bu^3 - Au^2 - (B+1)u + A = 0`, :math:`u = \\tanh(r\\Delta/2)`."""
        return 1 / (self.c * self.sigma * SQRT_PI), 1 / (self.c * self.r * self.sigma ** 2 * math.pi)

    def optimum(self) -> dict[str, float]:
        """The cubic's unique root in :math:`(0,1)` (NumPy's companion-matrix roots, the oracle), and
        :math:`\\Delta^* = (2/r)\\,\\mathrm{artanh}\\,u^*`, profit :math:`(Au - Bu^2/2 + \\tfrac12\\log(1-u^2))/r`."""
        a_coef, b_coef = self.cubic()
        roots = np.roots([b_coef, -a_coef, -(b_coef + 1), a_coef])
        u = float(next(z.real for z in roots if abs(z.imag) < 1e-12 and 0 < z.real < 1))
        profit = (a_coef * u - b_coef * u ** 2 / 2 + 0.5 * math.log1p(-u ** 2)) / self.r
        return {"prize_spread": 2 * math.atanh(u) / self.r, "u": u, "profit": profit}

    def profit_gradient(self, spread: float) -> float:
        """:math:`d\\Pi/d\\Delta = \\tfrac12(1-u^2)(A - Bu) - u/2` along the symmetric equilibrium."""
        a_coef, b_coef = self.cubic()
        u = math.tanh(self.r * spread / 2)
        return 0.5 * (1 - u ** 2) * (a_coef - b_coef * u) - u / 2

    def deviation_gain(self, spread: float, grid: np.ndarray | None = None) -> float:
        """Largest CE gain of agent 1 from any deviation on a grid, the rival at the symmetric effort.

        Non-positive (up to grid resolution) means the first-order solution is a global equilibrium.
        """
        theta = _tensor([spread], self.device)
        a_star = self.best_response(theta)
        grid = np.linspace(-1.0, 3.0 * float(a_star[0]) + 1.0, 4001) if grid is None else grid
        deviations = _tensor(grid, self.device)
        profile = torch.stack([deviations, a_star[1].expand_as(deviations)])
        best = float(self.agent_utilities(theta, profile)[0].max())
        return best - float(self.agent_utilities(theta, a_star)[0])


# --------------------------------------------------------------------------------------------
# The hypergradient and the outer loop
# --------------------------------------------------------------------------------------------

@dataclass
class Hypergradient:
    """The implicit hypergradient and what it took: the action, the adjoint :math:`v`, CG iterations."""

    grad: torch.Tensor
    action: torch.Tensor
    adjoint: torch.Tensor
    iterations: int
    converged: bool


def hypergradient(env: ContractEnv, contract: Any, *, action: torch.Tensor | None = None,
                  rtol: float = 1e-12, maxiter: int | None = None,
                  adjoint0: torch.Tensor | None = None, details: bool = False):
    """:math:`dF/d\\theta = \\nabla_\\theta F + \\partial_\\theta G^\\top v` with :math:`(-J)^\\top v = \\nabla_a F` (eq. S1).

    For one agent :math:`-J = -\\nabla^2_{aa} U` is SPD at a strict local maximum and :math:`v` comes
    from CG on Hessian-vector products (:func:`torch.func.jvp` of :math:`G`); for a game
    (``env.symmetric_jacobian`` false) from GMRES on vector-Jacobian products. ``action`` defaults to
    ``env.best_response(contract)``; ``adjoint0`` warm-starts CG. Returns the gradient tensor, or a
    :class:`Hypergradient` record when ``details`` is true.
    """
    theta = contract if isinstance(contract, torch.Tensor) else _tensor(contract, env.device)
    a = env.best_response(theta) if action is None else action
    grad_theta, grad_a = grad(env.principal_profit, argnums=(0, 1))(theta, a)
    if env.symmetric_jacobian:
        solve = conjugate_gradient(_negative_jacobian_product(env, theta, a), grad_a, x0=adjoint0,
                                   rtol=rtol, maxiter=maxiter)
        adjoint, iterations, converged = solve.x, solve.iterations, solve.converged
    else:
        pullback = vjp(lambda x: env.first_order(theta, x), a)[1]
        adjoint, iterations, converged = _gmres_solve(lambda u: -pullback(u)[0], grad_a, rtol)
    mixed = vjp(lambda t: env.first_order(t, a), theta)[1](adjoint)[0]
    total = grad_theta + mixed
    if details:
        return Hypergradient(grad=total, action=a, adjoint=adjoint, iterations=iterations, converged=converged)
    return total


def dense_hypergradient(env: ContractEnv, contract: Any, *, action: torch.Tensor | None = None) -> torch.Tensor:
    """The same hypergradient with the Jacobians formed densely (:func:`torch.func.jacfwd`) and a dense
    LU solve: :math:`O(n^2)` memory and :math:`O(n^3)` time, the baseline of the scaling experiment."""
    from torch.func import jacfwd

    theta = contract if isinstance(contract, torch.Tensor) else _tensor(contract, env.device)
    a = env.best_response(theta) if action is None else action
    grad_theta, grad_a = grad(env.principal_profit, argnums=(0, 1))(theta, a)
    jac_a = jacfwd(lambda x: env.first_order(theta, x))(a)
    jac_theta = jacfwd(lambda t: env.first_order(t, a))(theta)
    adjoint = torch.linalg.solve(-jac_a.T, grad_a)
    return grad_theta + jac_theta.T @ adjoint


def profit(env: ContractEnv, contract: Any) -> float:
    """:math:`\\Pi(\\theta) = F(\\theta, a^*(\\theta))`, the principal's profit at the agent's best response."""
    theta = contract if isinstance(contract, torch.Tensor) else _tensor(contract, env.device)
    return float(env.principal_profit(theta, env.best_response(theta)))


def finite_difference_gradient(env: ContractEnv, contract: Any, step: float = 1e-5) -> np.ndarray:
    """Central differences of :func:`profit`, the solver-independent check of :func:`hypergradient`."""
    theta = np.asarray(contract, dtype=np.float64)
    out = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = step
        out[i] = (profit(env, theta + e) - profit(env, theta - e)) / (2 * step)
    return out


@dataclass
class SolveResult:
    """Outcome of :func:`solve`: the contract (``.theta``; ``.beta``, ``.gamma``, ``.kappa`` or
    ``.prize_spread`` by name), the principal's ``.profit``, the agent's ``.action``, whether the
    projected-gradient residual reached ``tol`` (``.converged``, with ``.reason`` when not), and the
    trajectory of contracts, profits and residuals."""

    theta: np.ndarray
    named: dict[str, Any]
    profit: float
    action: np.ndarray
    converged: bool
    reason: str
    steps: int
    trajectory: list[np.ndarray] = field(default_factory=list)
    profits: list[float] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)
    cg_iterations: list[int] = field(default_factory=list)
    seconds: float = 0.0
    agent_curvature: float = math.nan

    def __getattr__(self, name: str) -> Any:
        named = self.__dict__.get("named", {})
        if name in named:
            return named[name]
        raise AttributeError(name)


def solve(env: ContractEnv, *, seed: int = 0, theta0: Any = None, max_steps: int = 1000,
          tol: float = 1e-11, step0: float = 1.0, rtol: float = 1e-12, keep_trajectory: bool = True,
          warn: bool = True) -> SolveResult:
    r"""Spectral projected gradient ascent (SPG, Birgin–Martínez–Raydan) on :math:`\Pi(\theta)`, with
    implicit hypergradients.

    Start at ``theta0`` or at ``env.random_contract`` drawn with ``seed``. Step :math:`k` moves along
    :math:`d = P(\theta + s_k\nabla\Pi) - \theta` with the Barzilai–Borwein length
    :math:`s_k = \|\Delta\theta\|^2 / (-\Delta\theta^\top\Delta\nabla\Pi)` (``step0`` first), halving
    :math:`\lambda` in :math:`\theta + \lambda d` until the non-monotone Armijo condition
    :math:`\Pi \ge \max(\text{last 10 profits}) + 10^{-4}\lambda\nabla\Pi^\top d` holds up to rounding.
    Only gradients set the step, so the end game does not hinge on profit differences at rounding
    level. The best response and the CG adjoint are warm-started from the previous step. Stops when
    the RMS of the KKT residual :math:`P(\theta + \nabla\Pi) - \theta` is at most ``tol``. A run that
    stops for any other reason (step budget, no best response, a failed second-order condition)
    returns its last iterate with ``converged=False``, a ``reason`` and, for one agent,
    ``agent_curvature``: the curvature of :math:`-\nabla^2_{aa}U` along the adjoint, near zero where the
    agent's second-order condition is failing. It warns unless ``warn=False``.
    """
    start_time = time.perf_counter()
    if theta0 is None:
        theta0 = env.random_contract(np.random.default_rng(seed))
    theta = env.project(_tensor(theta0, env.device))
    result_trajectory, profits, residuals, cg_iterations = [], [], [], []
    action, adjoint, value = None, None, math.nan
    reason, converged, steps = f"step budget of {max_steps} exhausted", False, 0
    step = step0
    scale = math.sqrt(theta.numel())
    previous = None
    try:
        action = env.best_response(theta)
        value = float(env.principal_profit(theta, action))
        for steps in range(max_steps + 1):
            record = hypergradient(env, theta, action=action, rtol=rtol, adjoint0=adjoint, details=True)
            adjoint = record.adjoint if env.symmetric_jacobian else None
            gradient = record.grad
            residual = float(torch.linalg.vector_norm(env.project(theta + gradient) - theta)) / scale
            if keep_trajectory:
                result_trajectory.append(theta.cpu().numpy().copy())
            profits.append(value)
            residuals.append(residual)
            cg_iterations.append(record.iterations)
            if residual <= tol:
                converged, reason = True, "KKT residual below tolerance"
                break
            if steps == max_steps:
                break
            if previous is not None:
                moved, turned = theta - previous[0], gradient - previous[1]
                curvature = -float(moved @ turned)
                step = min(max(float(moved @ moved) / curvature, 1e-10), 1e10) if curvature > 0 else 2 * step
            direction = env.project(theta + step * gradient) - theta
            slope = float(gradient @ direction)
            reference = max(profits[-10:])
            # A profit evaluated at an inner solution accurate to ~1e-12 is itself only that accurate
            # (F is not stationary in a), so smaller differences are noise, not descent.
            slack = PROFIT_RESOLUTION * (abs(reference) + 1)
            fraction = 1.0
            for _ in range(60):
                candidate = theta + fraction * direction
                try:
                    candidate_action = env.best_response(candidate, action)
                    candidate_value = float(env.principal_profit(candidate, candidate_action))
                except BestResponseError:
                    candidate_value = -math.inf
                if candidate_value >= reference + 1e-4 * fraction * slope - slack:
                    break
                fraction /= 2
            else:
                reason = "line search failed: no ascent step found"
                break
            previous = (theta, gradient)
            theta, action, value = candidate, candidate_action, candidate_value
    except (BestResponseError, NotPositiveDefinite) as error:
        reason = f"stopped: {error}"
    if action is None:
        raise BestResponseError(f"no best response at the starting contract {np.asarray(theta0)}")
    curvature = math.nan
    if not converged and env.symmetric_jacobian and adjoint is not None and float(adjoint @ adjoint) > 0:
        # Rayleigh quotient of -H along the adjoint: an upper bound on the agent's smallest curvature,
        # so a value near zero says the second-order condition is about to fail.
        curvature = float(adjoint @ _negative_jacobian_product(env, theta, action)(adjoint) / (adjoint @ adjoint))
        reason += f" (agent curvature along the adjoint {curvature:.1e})"
    theta_np = theta.cpu().numpy().copy()
    result = SolveResult(theta=theta_np, named=env.named(theta_np), profit=value,
                         action=action.detach().cpu().numpy().copy(), converged=converged, reason=reason,
                         steps=steps, trajectory=result_trajectory, profits=profits, residuals=residuals,
                         cg_iterations=cg_iterations, seconds=time.perf_counter() - start_time,
                         agent_curvature=curvature)
    if not converged and warn:
        warnings.warn(f"solve did not converge: {reason}", RuntimeWarning, stacklevel=2)
    return result


# --------------------------------------------------------------------------------------------
# Solver-independent oracles (NumPy/SciPy only: no torch, no hypergradients)
# --------------------------------------------------------------------------------------------

def logistic_profit_oracle(r: float, c: float, sigma: float, contract: np.ndarray, *,
                           n_nodes: int = 240, grid_size: int = 401) -> tuple[float, float]:
    """Profit and global best response of logistic pay, computed without torch.

    The agent's CE is evaluated on a grid of ``grid_size`` actions with ``n_nodes``-point
    Gauss–Hermite quadrature (another rule than :class:`CappedLogisticPay` uses); the best grid point
    is refined by Brent's method on the agent's FOC in its Esscher-tilt form (S5),
    :math:`ca = \\mathbb E[g'e^{-rg}]/\\mathbb E[e^{-rg}]`; profit :math:`a - ca^2/2 - \\mathrm{RP}`.
    """
    from scipy.optimize import brentq
    from scipy.special import expit, logsumexp

    beta, gamma, kappa = (float(v) for v in contract)
    z, w = gauss_hermite(n_nodes)

    def bonus_and_slope(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = expit(gamma * (np.reshape(a, (-1, 1)) + sigma * z - kappa))
        return beta * s, beta * gamma * s * (1 - s)

    def certainty_equivalent(a: np.ndarray) -> np.ndarray:
        return -logsumexp(-r * bonus_and_slope(a)[0], b=w, axis=1) / r - c * np.square(a) / 2

    def marginal_ce(a: float) -> float:
        g, slope = bonus_and_slope(np.array([a]))
        tilt = w * np.exp(-r * (g[0] - g[0].min()))
        return float(tilt @ slope[0] / tilt.sum()) - c * a

    bound = math.sqrt(2 * abs(beta) / c) + 1.0
    grid = np.linspace(-bound, bound, grid_size)
    index = int(np.argmax(certainty_equivalent(grid)))
    lo, hi = grid[max(index - 1, 0)], grid[min(index + 1, grid_size - 1)]
    a = brentq(marginal_ce, lo, hi, xtol=1e-15, rtol=1e-15) if marginal_ce(lo) * marginal_ce(hi) < 0 \
        else float(grid[index])
    g = bonus_and_slope(np.array([a]))[0][0]
    premium = float(w @ g + logsumexp(-r * g, b=w) / r)
    return a - c * a ** 2 / 2 - premium, a


def logistic_optimum_oracle(r: float, c: float, sigma: float, cap: float, *, starts: int = 4,
                            seed: int = 0, max_slope: float = 8.0) -> dict[str, Any]:
    """Best logistic contract under :math:`0 \\le \\beta \\le B` and :math:`\\gamma\\sigma \\le` ``max_slope``,
    by multi-start L-BFGS-B with finite-difference gradients on :func:`logistic_profit_oracle`."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    best: dict[str, Any] = {"profit": -math.inf}
    bounds = [(0.0, cap), (CappedLogisticPay.min_gamma, max_slope / sigma), (-10.0, 10.0)]
    for _ in range(starts):
        start = np.array([rng.uniform(0.5 * cap, cap), rng.uniform(0.3, 3.0), rng.uniform(-2.0, 1.0)])
        found = minimize(lambda x: -logistic_profit_oracle(r, c, sigma, x)[0], start, method="L-BFGS-B",
                         bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-10, "eps": 1e-6})
        if -found.fun > best["profit"]:
            best = {"profit": float(-found.fun), "theta": found.x}
    return best


# --------------------------------------------------------------------------------------------
# Instances used by the chapter and the benchmarks
# --------------------------------------------------------------------------------------------

def random_multitask_env(n: int, seed: int = 0, r: float = 1.0, device: Any = "cpu") -> MultiTaskCaraNormal:
    """A dense multi-task instance: :math:`C = I + AA^\\top/n` (complementary tasks keep effort
    positive), :math:`\\Sigma = 0.3I + BB^\\top/n`, :math:`b \\sim U(0.5, 1.5)^n`."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    return MultiTaskCaraNormal(r, np.eye(n) + a @ a.T / n, 0.3 * np.eye(n) + b @ b.T / n,
                               rng.uniform(0.5, 1.5, n), device=device)


def tridiagonal_multitask_env(n: int, seed: int = 0, r: float = 1.0, device: Any = "cpu") -> MultiTaskCaraNormal:
    """The scaling instance: :math:`C = \\mathrm{tridiag}(-1/2,\\ 2 + u_i,\\ -1/2)`, :math:`u_i \\sim U(0,1)`
    (diagonally dominant, so SPD with spectrum in :math:`[1, 4]`), heterogeneous noise
    :math:`\\sigma_i^2 \\sim U(0.5, 2)`, :math:`b_i \\sim U(0.5, 1.5)`."""
    if n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    rng = np.random.default_rng(seed)
    cost = Tridiagonal(2.0 + rng.uniform(0.0, 1.0, n), np.full(n - 1, -0.5))
    return MultiTaskCaraNormal(r, cost, rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 1.5, n), device=device)


def normal_draws(rng: np.random.Generator, replications: int, size: int, *, sigma: float = 1.0,
                 antithetic: bool = False) -> np.ndarray:
    """``(replications, size)`` draws of :math:`N(0, \\sigma^2)`; with ``antithetic`` the second half of
    each row is the negated first half (``size`` must be even)."""
    if replications < 1 or size < 1:
        raise ValueError(f"replications and size must be positive, got {replications} and {size}")
    if not antithetic:
        return sigma * rng.normal(size=(replications, size))
    if size % 2:
        raise ValueError(f"antithetic draws need an even size, got {size}")
    half = sigma * rng.normal(size=(replications, size // 2))
    return np.concatenate([half, -half], axis=1)
