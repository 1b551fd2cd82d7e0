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
:math:`-J`, with Hessian-vector products from reverse-mode autodiff (``torch.func.vjp`` of
:math:`G`, recorded once and replayed); no Hessian is ever formed. The agent's best response
itself is found by the generic Newton iteration :func:`newton_best_response`.

All tensors are float64. Environments are small classes holding model constants; everything else
is a pure function.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import numpy as np
import torch
from torch.func import grad, linearize, vjp

from .validation import positive_number

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

def _tensor(values: Any, device: Any = "cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=DTYPE, device=device)


class ContractEnv:
    """A principal-agent model. Subclasses define the three maps of the bilevel problem.

    - ``agent_utility(theta, a)``: the agent's certainty equivalent less the fixed wage;
    - ``first_order(theta, a)``: the map whose zero is the best response (default: the gradient of
      ``agent_utility``); ``symmetric_jacobian`` says whether its Jacobian is symmetric;
    - ``principal_profit(theta, a)``: expected output less expected wage, with the fixed wage set by
      the binding participation constraint (reservation CE 0).

    The best response is found by the generic :func:`newton_best_response` from
    ``initial_action`` (or a warm start); where a model has a closed form it is the method
    ``closed_form_response``, an oracle for tests and tables that the solver never calls.
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
        """:func:`newton_best_response` from the warm start ``a0``; if that fails (a warm start
        can lie where the agent's problem is not concave), once more from ``initial_action``."""
        start = self.initial_action(theta)
        if a0 is not None:
            try:
                return newton_best_response(self, theta, a0)
            except BestResponseError:
                if torch.equal(a0, start):
                    raise
        return newton_best_response(self, theta, start)

    def project(self, theta: torch.Tensor) -> torch.Tensor:
        return theta

    def random_contract(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 2.0, size=len(self.contract_names))

    def named(self, theta: np.ndarray) -> dict[str, Any]:
        """The contract's parts by name (``beta``, ``gamma``, ...)."""
        return {name: float(theta[i]) for i, name in enumerate(self.contract_names)}


def newton_best_response(env: ContractEnv, theta: torch.Tensor, a0: torch.Tensor, *,
                         tol: float = 1e-12, max_iter: int = 100) -> torch.Tensor:
    """Newton's method on the agent's first-order map :math:`G(\\theta, a) = 0`: the generic inner
    solver, used by every environment (closed forms are kept as oracles, never called here).

    Step :math:`s` solves :math:`(-J)s = G`, :math:`J = \\partial_a G`, from forward-mode products
    only: by CG on :math:`-J = -\\nabla^2_{aa}U` for one agent (its curvature check doubles as the
    agent's second-order condition), by GMRES for a game (``env.symmetric_jacobian`` false).
    Stops after a step whose RMS is below ``tol`` (or at :math:`G = 0` exactly). Raises
    :class:`BestResponseError` when the second-order condition fails on the way (no local maximiser
    is reachable from ``a0``) or after ``max_iter`` steps (for instance when no critical point
    exists).
    """
    a = a0
    scale = math.sqrt(a.numel())
    for _ in range(max_iter):
        g, neg_jacobian = _first_order_and_product(env, theta, a)
        if not bool(torch.isfinite(g).all()):
            raise BestResponseError("the agent's first-order map is not finite: no best response")
        if not bool(g.any()):
            return a
        if env.symmetric_jacobian:
            try:
                step = conjugate_gradient(neg_jacobian, g, rtol=1e-10).x
            except NotPositiveDefinite as error:
                raise BestResponseError(f"the agent's second-order condition fails ({error})") from None
        else:
            step = _gmres_solve(neg_jacobian, g, 1e-10)[0]
        a = a + step
        # Newton converges quadratically: a last step this small leaves an error far below it
        # (a test on |G| instead would depend on the scale of the agent's curvature).
        if float(torch.linalg.vector_norm(step)) <= tol * scale:
            return a
    raise BestResponseError(f"Newton's method for the best response did not converge in {max_iter} steps")


def _first_order_and_product(env: ContractEnv, theta: torch.Tensor, a: torch.Tensor
                             ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """:math:`G(\\theta, a)` and the map :math:`u \\mapsto -J u`, :math:`J = \\partial_a G(\\theta, a)`,
    matrix-free and built once per :math:`(\\theta, a)`, then replayed on every CG or GMRES step.

    - One agent (``env.symmetric_jacobian``): :math:`Ju = J^\\top u`, the pullback of one reverse pass
      through :math:`G`, which also yields :math:`G`.
    - A game: :math:`Ju` as the pullback of the linear map :math:`v \\mapsto J^\\top v` (reverse mode
      twice, the "double-vjp" trick), far cheaper here than forward mode through a gradient.
    - ``env.constant_jacobian`` (:math:`G` affine in :math:`a` with a Jacobian that depends on neither
      argument; multi-task Holmström–Milgrom: :math:`J = -C`): the forward pass is traced once per
      environment with :func:`torch.func.linearize` and replayed (about 4x cheaper at
      :math:`n = 10^5` than re-tracing; see the benchmark).
    """
    if getattr(env, "constant_jacobian", False):
        linear = env.__dict__.get("_linearized_first_order")
        if linear is None or linear[0] != a.shape or linear[1] != a.device:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer warns about the constants it folds
                tangent_map = linearize(lambda x: env.first_order(theta, x), a)[1]
            linear = (a.shape, a.device, tangent_map)
            env._linearized_first_order = linear
        return env.first_order(theta, a), lambda u: -linear[2](u)
    g, pullback = vjp(lambda x: env.first_order(theta, x), a)
    if env.symmetric_jacobian:
        return g, lambda u: -pullback(u)[0]
    transposed = vjp(lambda v: pullback(v)[0], torch.zeros_like(a))[1]
    return g, lambda u: -transposed(u)[0]


def _negative_jacobian_product(env: ContractEnv, theta: torch.Tensor, a: torch.Tensor
                               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """:math:`u \\mapsto -J u` at :math:`(\\theta, a)` (see :func:`_first_order_and_product`)."""
    return _first_order_and_product(env, theta, a)[1]


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
        self.r, self.c = positive_number("r", r), positive_number("c", c)
        self.sigma2 = positive_number("sigma2", sigma2)
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

    def initial_action(self, theta):
        return torch.zeros_like(theta)

    def closed_form_response(self, theta: torch.Tensor) -> torch.Tensor:
        """Oracle (S2): :math:`a^* = \\beta / c`."""
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
        self.r = positive_number("r", r)
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
        self.r, self.c = positive_number("r", r), positive_number("c", c)
        self.device = device

    def agent_utility(self, theta, a):
        return torch.exp(a[0]) * _poisson_phi(self.r, theta[0]) - self.c * torch.exp(2 * a[0]) / 2

    def principal_profit(self, theta, a):
        lam, phi = torch.exp(a[0]), _poisson_phi(self.r, theta[0])
        return lam - self.c * lam ** 2 / 2 - lam * (theta[0] - phi)

    def best_response(self, theta, a0=None):
        if not float(theta[0]) > 0:  # the CE then decreases in effort: a -> -infinity
            raise BestResponseError(f"no best response for beta = {float(theta[0]):.3g} <= 0")
        return super().best_response(theta, a0)

    def closed_form_response(self, theta: torch.Tensor) -> torch.Tensor:
        """Oracle (P1): :math:`a^* = \\log(\\varphi(\\beta)/c)` for :math:`\\beta > 0`."""
        return torch.log(_poisson_phi(self.r, theta[:1]) / self.c)

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
    exists. :meth:`best_response` finds the local maximiser :math:`a = -W_0(-\\varphi/c)` by Newton's
    method; it exists only while :math:`\\varphi/c < 1/e` (at equality the critical point
    :math:`a = 1` is an inflection point), and :class:`BestResponseError` is raised beyond.
    Newton starts at :math:`a = 0` (or a warm start below the root): :math:`G = e^a\\varphi - ca` is
    convex in :math:`a`, so the iterates rise monotonically to the principal branch; past the edge
    they cross :math:`a = 1`, where CG meets the failed second-order condition.
    """

    def agent_utility(self, theta, a):
        return torch.exp(a[0]) * _poisson_phi(self.r, theta[0]) - self.c * a[0] ** 2 / 2

    def principal_profit(self, theta, a):
        lam, phi = torch.exp(a[0]), _poisson_phi(self.r, theta[0])
        return lam - self.c * a[0] ** 2 / 2 - lam * (theta[0] - phi)

    def closed_form_response(self, theta: torch.Tensor) -> torch.Tensor:
        """Oracle (P2): the local maximiser :math:`a = -W_0(-\\varphi/c)`, for :math:`\\varphi/c < 1/e`."""
        from scipy.special import lambertw
        ratio = float(_poisson_phi(self.r, theta[:1])) / self.c
        if not ratio < math.exp(-1):
            raise BestResponseError(f"no local maximiser: phi/c = {ratio:.6f} >= 1/e")
        local = -lambertw(-ratio, 0).real
        return torch.tensor([local], dtype=DTYPE, device=theta.device)

    def response_slope(self, beta: float) -> float:
        """:math:`da/d\\beta = e^a y / (c(1-a))` along the local branch, :math:`y = e^{-r\\beta}`
        (implicit differentiation of :math:`e^a\\varphi(\\beta) = ca`; :math:`\\varphi' = y`)."""
        a = float(self.closed_form_response(_tensor([beta]))[0])
        return math.exp(a) * math.exp(-self.r * beta) / (self.c * (1 - a))

    def branch_profit_slope(self, beta: float) -> float:
        """:math:`d\\Pi/d\\beta = e^a\\big[(1-\\beta)\\,da/d\\beta - (1-y)\\big]` along the local branch,
        from :math:`\\partial_a\\Pi = e^a(1-\\beta)` (using :math:`e^a\\varphi = ca`) and
        :math:`\\partial_\\beta\\Pi = -e^a(1-y)`. It tends to :math:`+\\infty` at the edge when
        :math:`\\beta^{\\mathrm{edge}} < 1`, but need not be positive on the whole branch."""
        a = float(self.closed_form_response(_tensor([beta]))[0])
        y = math.exp(-self.r * beta)
        return math.exp(a) * ((1 - beta) * self.response_slope(beta) - (1 - y))

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
    :math:`Z \\sim N(0,1)` (Gauss–Hermite, rescaled; cached, returned as copies)."""
    nodes, weights = _gauss_hermite_cached(int(n_nodes))
    return nodes.copy(), weights.copy()


@functools.lru_cache(maxsize=16)
def _gauss_hermite_cached(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
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
        self.r, self.c, self.sigma = positive_number("r", r), positive_number("c", c), positive_number("sigma", sigma)
        cap = float(cap)
        if not cap > 0:
            raise ValueError(f"cap must be positive (or math.inf), got {cap!r}")
        self.cap = cap
        self.max_slope = positive_number("max_slope", max_slope)
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
        grid = torch.linspace(-bound, bound, 201, dtype=DTYPE, device=theta.device)
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
        self.r, self.c, self.sigma = positive_number("r", r), positive_number("c", c), positive_number("sigma", sigma)
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

    def closed_form_response(self, theta: torch.Tensor) -> torch.Tensor:
        """Oracle (S6): the dominant-strategy effort :math:`a^* = \\beta / c`."""
        return theta[:1] / self.c

    def optimum(self) -> dict[str, float]:
        """Closed form (S6): :math:`\\gamma^*`, :math:`v^*`, :math:`\\beta^* = 1/(1+rcv^*)`, :math:`\\Pi^*`."""
        m, s2, e2 = self.n_agents - 1, self.sigma ** 2, self.sigma_common ** 2
        gamma = m * e2 / (m * e2 + s2)
        v = s2 * (self.n_agents * e2 + s2) / (m * e2 + s2)
        k = 1 + self.r * self.c * v
        return {"beta": 1 / k, "gamma": gamma, "variance": v, "profit": 1 / (2 * self.c * k)}


class Tournament(ContractEnv):
    """Two-agent rank-order tournament (S7): :math:`x_i = a_i + \\ell_i\\sigma_\\eta\\eta + \\varepsilon_i`,
    :math:`\\eta \\sim N(0, 1)` common to both, :math:`\\varepsilon_i \\sim N(0, \\sigma^2)`; the higher output
    wins the prize spread :math:`\\Delta` over a common base wage. The chapter's model has equal
    exposures :math:`\\ell_1 = \\ell_2 = 1` (``loadings``).

    The common shock is simulated: agent 1's win probability is the Gauss–Hermite average over
    ``shock_nodes`` values of :math:`\\eta` of its conditional win probability,
    :math:`p_1 = \\mathbb E_\\eta\\,\\Phi\\big((m_1(\\eta) - m_2(\\eta))/(\\sigma\\sqrt2)\\big)` with
    :math:`m_i(\\eta) = a_i + \\ell_i\\sigma_\\eta\\eta` the outputs' conditional means. With equal loadings
    the shock cancels from :math:`m_1 - m_2` (up to rounding), so nothing depends on
    :math:`\\sigma_\\eta`; with unequal ones :math:`p_1 = \\Phi\\big((a_1-a_2)/(\\sqrt2\\,\\sigma_{\\mathrm{eff}})\\big)`,
    :math:`\\sigma_{\\mathrm{eff}}^2 = \\sigma^2 + (\\ell_1-\\ell_2)^2\\sigma_\\eta^2/2`.

    Agent :math:`i`'s CE less the base wage is :math:`-r^{-1}\\log(p_i e^{-r\\Delta} + 1 - p_i) - c a_i^2/2`;
    the inner problem is a Nash game, :math:`G = (\\partial_{a_1}U_1, \\partial_{a_2}U_2)` with a
    non-symmetric Jacobian (Newton steps and the adjoint by GMRES). Profit per agent: the mean of
    :math:`a_i - c a_i^2/2 - \\mathrm{RP}_i`, :math:`\\mathrm{RP}_i = p_i\\Delta + r^{-1}\\log(p_i e^{-r\\Delta} + 1 - p_i)`.
    """

    contract_names = ("prize_spread",)
    symmetric_jacobian = False

    def __init__(self, r: float, c: float, sigma: float, sigma_common: float = 0.0, *,
                 loadings: tuple[float, float] = (1.0, 1.0), shock_nodes: int = 64,
                 device: Any = "cpu"):
        self.r, self.c, self.sigma = positive_number("r", r), positive_number("c", c), positive_number("sigma", sigma)
        if not float(sigma_common) >= 0:
            raise ValueError(f"sigma_common must be non-negative, got {sigma_common!r}")
        loadings = tuple(float(v) for v in loadings)
        if len(loadings) != 2 or not all(math.isfinite(v) for v in loadings):
            raise ValueError(f"loadings must be two finite numbers, got {loadings!r}")
        if int(shock_nodes) != shock_nodes or shock_nodes < 1:
            raise ValueError(f"shock_nodes must be a positive integer, got {shock_nodes!r}")
        self.sigma_common, self.loadings, self.device = float(sigma_common), loadings, device
        nodes, weights = gauss_hermite(int(shock_nodes))
        self.shock_nodes, self.shock_weights = _tensor(nodes, device), _tensor(weights, device)
        self._exposure = _tensor(loadings, device).reshape(2, 1) * self.sigma_common

    def _win_probabilities(self, a: torch.Tensor) -> torch.Tensor:
        means = a.reshape(2, -1, 1) + (self._exposure * self.shock_nodes).unsqueeze(1)
        conditional = torch.special.ndtr((means[0] - means[1]) / (self.sigma * math.sqrt(2.0)))
        p1 = (conditional @ self.shock_weights).reshape(a[0].shape)
        return torch.stack([p1, 1 - p1])

    def effective_sigma(self) -> float:
        """:math:`\\sigma_{\\mathrm{eff}} = \\sqrt{\\sigma^2 + (\\ell_1-\\ell_2)^2\\sigma_\\eta^2/2}`: the noise of
        :math:`(x_1 - x_2)/\\sqrt2` given the efforts, the only noise the ranking sees."""
        gap = self.loadings[0] - self.loadings[1]
        return math.sqrt(self.sigma ** 2 + gap ** 2 * self.sigma_common ** 2 / 2)

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

    def closed_form_response(self, theta: torch.Tensor) -> torch.Tensor:
        """Oracle (S7): the symmetric equilibrium
        :math:`c a^* = \\tanh(r\\Delta/2)/(r\\sigma_{\\mathrm{eff}}\\sqrt\\pi)`."""
        sigma = self.effective_sigma()
        effort = torch.tanh(self.r * theta[0] / 2) / (self.c * self.r * sigma * SQRT_PI)
        return effort.reshape(1).repeat(2)

    def initial_action(self, theta):
        return torch.zeros(2, dtype=DTYPE, device=theta.device)

    def project(self, theta):
        return theta.clamp(min=0.0)

    def random_contract(self, rng):
        return rng.uniform(0.1, 3.0, size=1)

    def cubic(self) -> tuple[float, float]:
        """:math:`(A, B) = (1/(c\\sigma\\sqrt\\pi),\\ 1/(cr\\sigma^2\\pi))` of the FOC
        :math:`Bu^3 - Au^2 - (B+1)u + A = 0`, :math:`u = \\tanh(r\\Delta/2)`, with
        :math:`\\sigma = \\sigma_{\\mathrm{eff}}` (:meth:`effective_sigma`; :math:`\\sigma` itself for equal
        loadings)."""
        sigma = self.effective_sigma()
        return 1 / (self.c * sigma * SQRT_PI), 1 / (self.c * self.r * sigma ** 2 * math.pi)

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
        a_star = self.best_response(theta)  # the generic solver's equilibrium is what is checked
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
    from CG on Hessian-vector products (:func:`_first_order_and_product`: a replayed reverse-mode
    pullback of :math:`G`); for a game (``env.symmetric_jacobian`` false) from GMRES on
    vector-Jacobian products. ``action`` defaults to
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
                           n_nodes: int = 240, grid_size: int = 201) -> tuple[float, float]:
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


def logistic_optimum_oracle(r: float, c: float, sigma: float, cap: float, *, starts: int = 20,
                            seed: int = 0, max_slope: float = 8.0) -> dict[str, Any]:
    """Best logistic contract under :math:`0 \\le \\beta \\le B` and :math:`\\gamma\\sigma \\le` ``max_slope``,
    by multi-start L-BFGS-B with finite-difference gradients on :func:`logistic_profit_oracle`.

    Each of ``starts`` random starts runs L-BFGS-B to a moderate tolerance; the best of them is then
    polished to a tight one. Returns the best ``profit`` and contract ``theta``, and the local
    optima reached from every start (``start_profits``), which show whether the starts disagree.
    """
    from scipy.optimize import minimize

    if int(starts) != starts or starts < 1:
        raise ValueError(f"starts must be a positive integer, got {starts!r}")
    rng = np.random.default_rng(seed)
    bounds = [(0.0, cap), (CappedLogisticPay.min_gamma, max_slope / sigma), (-10.0, 10.0)]

    def local(start: np.ndarray, ftol: float, gtol: float):
        return minimize(lambda x: -logistic_profit_oracle(r, c, sigma, x)[0], start,
                        method="L-BFGS-B", bounds=bounds,
                        options={"ftol": ftol, "gtol": gtol, "eps": 1e-6})

    found = []
    for _ in range(int(starts)):
        start = np.array([rng.uniform(0.5 * cap, cap), rng.uniform(0.3, 3.0), rng.uniform(-2.0, 1.0)])
        found.append(local(start, 1e-9, 1e-6))
    best = min(found, key=lambda result: result.fun)
    polished = local(best.x, 1e-15, 1e-10)
    if polished.fun > best.fun:  # polishing never makes the oracle worse
        polished = best
    return {"profit": float(-polished.fun), "theta": polished.x,
            "start_profits": np.array([-result.fun for result in found])}


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


# --------------------------------------------------------------------------------------------
# Experiments of the chapter, each a few solves; tables
# --------------------------------------------------------------------------------------------

def saa_bias_coefficient(r: float, c: float, sigma2: float) -> float:
    """Leading coefficient :math:`b_1` of the sample-average bias (S9, delta method):
    :math:`\\mathbb E\\hat\\beta_N = \\beta^* + b_1/N + O(N^{-2})` with

    .. math:: b_1 = \\frac{r\\sigma^2\\beta^* e^{s^2\\beta^{*2}}}{k}
              + \\frac{r^2\\sigma^4\\beta^* e^{s^2\\beta^{*2}}(2 + s^2\\beta^{*2})}{k^2},
       \\qquad s = r\\sigma,\\ k = 1/c + r\\sigma^2,\\ \\beta^* = 1/(1 + rc\\sigma^2).

    The first term is :math:`-\\mathbb E D/k`, the mean error of the premium's slope; the second is
    :math:`\\mathbb E[DD']/k^2`, the covariance of that error with the error of its curvature.
    """
    r, c, sigma2 = positive_number("r", r), positive_number("c", c), positive_number("sigma2", sigma2)
    beta = 1 / (1 + r * c * sigma2)
    k, t = 1 / c + r * sigma2, r * r * sigma2 * beta * beta
    return (r * sigma2 * beta * math.exp(t) / k
            + r * r * sigma2 ** 2 * beta * math.exp(t) * (2 + t) / k ** 2)


def sample_average_contracts(draws: np.ndarray, r: float = 1.0, c: float = 1.0,
                             device: Any = "cpu") -> np.ndarray:
    """:math:`\\hat\\beta_N` of each row of ``draws`` (shape ``(R, N)``): the maximiser of the
    sample-average profit of :class:`CaraNormal`, all rows in one vectorised :func:`solve`."""
    env = CaraNormal(r, c, 1.0, noise=draws, device=device)
    result = solve(env, theta0=np.full(np.shape(draws)[0], 0.5), keep_trajectory=False)
    if not result.converged:
        raise RuntimeError(f"sample-average solve did not converge: {result.reason}")
    return np.atleast_1d(result.beta)


def compare_filters(sigma_common: float, *, r: float = 1.0, c: float = 1.0, sigma: float = 1.0,
                    seed: int = 0, device: Any = "cpu") -> dict[str, Any]:
    """Individual pay, linear RPE and the tournament at one common-shock level (S6, S7), each
    solved from a random start, beside its closed-form oracle. Returns the profits, the solver's
    and the oracle's contracts, and the tournament's largest gain from a deviation."""
    individual = solve(CaraNormal(r, c, sigma ** 2 + sigma_common ** 2, device=device), seed=seed)
    rpe_env = LinearRPE(r, c, sigma, sigma_common, device=device)
    tournament_env = Tournament(r, c, sigma, sigma_common, device=device)
    rpe, tournament = solve(rpe_env, seed=seed), solve(tournament_env, seed=seed)
    return {"profit": {"individual": individual.profit, "RPE": rpe.profit,
                       "tournament": tournament.profit},
            "rpe": (rpe.beta, rpe.gamma), "rpe_oracle": (rpe_env.optimum()["beta"],
                                                         rpe_env.optimum()["gamma"]),
            "spread": tournament.prize_spread,
            "spread_oracle": tournament_env.optimum()["prize_spread"],
            "deviation_gain": tournament_env.deviation_gain(tournament.prize_spread),
            "converged": individual.converged and rpe.converged and tournament.converged}


def side_by_side(rows: list[tuple[str, Any, Any]], *, digits: int = 6) -> str:
    """A text table of ``(label, solver value, oracle value)`` rows with their absolute gap.

    Solver values are computations, marked ``≈`` (the regression test compares the text around
    them); oracle values are marked too, since they are roots and optima found numerically."""
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'':{width}}  {'solver':>{digits + 6}}  {'oracle':>{digits + 6}}  gap"]
    for label, solver_value, oracle_value in rows:
        gap = abs(float(solver_value) - float(oracle_value))
        solver_text, oracle_text = (f"≈{float(v):.{digits}f}" for v in (solver_value, oracle_value))
        lines.append(f"{label:{width}}  {solver_text:>{digits + 6}}  {oracle_text:>{digits + 6}}  "
                     f"≈{gap:.0e}")
    return "\n".join(lines)


def gradient_check(env: ContractEnv, contract: Any,
                   closed_form: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, float]:
    """The implicit hypergradient against central finite differences of :func:`profit` and, where
    given, a closed-form derivative: the largest absolute gap of each pair, and the gradient's scale."""
    theta = np.asarray(contract, dtype=np.float64)
    implicit = hypergradient(env, theta).cpu().numpy()
    finite = finite_difference_gradient(env, theta)
    closed = None if closed_form is None else np.asarray(closed_form(theta), dtype=np.float64)
    return {"implicit vs FD": float(np.abs(implicit - finite).max()),
            "implicit vs closed form": math.nan if closed is None
            else float(np.abs(implicit - closed).max()),
            "FD vs closed form": math.nan if closed is None else float(np.abs(finite - closed).max()),
            "scale": float(np.abs(finite).max())}


def cg_experiment(kappas: tuple[float, ...], sizes: tuple[int, ...], iterations: int, *,
                  seed: int = 0, device: Any = "cpu") -> dict[tuple[float, int], np.ndarray]:
    """CG error curves (S8) of the adjoint system :math:`(-H)v = \\nabla_aF` of multi-task models
    with cost :class:`Tridiagonal` ``with_condition_number(n, kappa)``, at a contract
    :math:`\\beta_i \\sim U(0, 1)`; the exact adjoint comes from a banded direct solve (SciPy)."""
    from scipy.linalg import solve_banded

    curves = {}
    for kappa in kappas:
        for n in sizes:
            cost = Tridiagonal.with_condition_number(n, kappa)
            env = MultiTaskCaraNormal(1.0, cost, np.ones(n), np.ones(n), device=device)
            theta = _tensor(np.random.default_rng(seed).uniform(0, 1, n), device)
            rhs = grad(env.principal_profit, argnums=1)(theta, env.best_response(theta))
            banded = np.vstack([np.r_[0, cost.off], cost.diag, np.r_[cost.off, 0]])
            exact = _tensor(solve_banded((1, 1), banded, rhs.cpu().numpy()), device)
            curves[kappa, n] = cg_error_curve(env._cost_matvec, rhs, exact, iterations)
    return curves


def hypergradient_timings(sizes: list[int], dense_sizes: list[int], *, seed: int = 0,
                          device: Any = "cpu") -> tuple[dict[int, float], dict[int, float]]:
    """Median seconds of one hypergradient, matrix-free (3 repeats) and dense (1 repeat, only for
    ``dense_sizes``), on :func:`tridiagonal_multitask_env` at :math:`\\beta = 0.5`; both methods get
    the same inner solution, so only the hypergradient is timed (CUDA synchronised)."""
    from .runtime import median_seconds

    matrix_free, dense = {}, {}
    for n in sorted(set(sizes) | set(dense_sizes)):
        env = tridiagonal_multitask_env(n, seed=seed, device=device)
        theta = torch.full((n,), 0.5, dtype=DTYPE, device=device)
        action = env.best_response(theta)
        matrix_free[n] = median_seconds(functools.partial(hypergradient, env, theta, action=action),
                                        repeats=3, device=device)
        if n in dense_sizes:
            dense[n] = median_seconds(
                functools.partial(dense_hypergradient, env, theta, action=action), repeats=1, device=device)
    return matrix_free, dense
