"""Unit tests of theorylab.contracts, each against an oracle that shares no code with the solver:
closed forms, NumPy/SciPy linear algebra, Brent's method, finite differences, brute-force grids."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import expit, logsumexp, ndtr

from theorylab import contracts as ct

torch.set_num_threads(1)


def spd(n, seed, shift=1.0):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T / n + shift * np.eye(n)


# ------------------------------------------------------------------ linear algebra

def test_cg_matches_numpy_solve_on_random_spd():
    a = spd(30, 0)
    b = np.random.default_rng(1).normal(size=30)
    result = ct.conjugate_gradient(lambda x: torch.as_tensor(a) @ x, torch.as_tensor(b), rtol=1e-13)
    assert result.converged
    np.testing.assert_allclose(result.x.numpy(), np.linalg.solve(a, b), rtol=0, atol=1e-10)


def test_cg_warm_start_from_solution_takes_no_iteration():
    a = spd(10, 2)
    b = torch.ones(10, dtype=torch.float64)
    exact = torch.as_tensor(np.linalg.solve(a, b.numpy()))
    result = ct.conjugate_gradient(lambda x: torch.as_tensor(a) @ x, b, x0=exact, rtol=1e-10)
    assert result.iterations == 0 and result.converged


def test_cg_refuses_an_indefinite_operator():
    # CG on the Hessian of a max problem (not its negative) must fail loudly.
    negative = -torch.as_tensor(spd(5, 3))
    with pytest.raises(ct.NotPositiveDefinite):
        ct.conjugate_gradient(lambda x: negative @ x, torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("kappa", [5.0, 21.0, 100.0])
def test_cg_error_respects_chebyshev_bound(kappa):
    n = 400
    cost = ct.Tridiagonal.with_condition_number(n, kappa)
    dense = cost.to_scipy().toarray()
    rhs = np.random.default_rng(0).uniform(-1, 1, n)
    exact = torch.as_tensor(np.linalg.solve(dense, rhs))
    errors = ct.cg_error_curve(lambda u: torch.as_tensor(dense) @ u, torch.as_tensor(rhs), exact, 40)
    bound = ct.cg_error_bound(np.linalg.cond(dense), np.arange(41))
    visible = errors > 1e-13
    assert np.all(errors[visible] <= bound[visible] * (1 + 1e-9))


def test_tridiagonal_with_condition_number_has_that_spectrum():
    cost = ct.Tridiagonal.with_condition_number(500, 21.0)
    eigenvalues = np.linalg.eigvalsh(cost.to_scipy().toarray())
    assert eigenvalues.min() > 0
    assert 20.0 < eigenvalues.max() / eigenvalues.min() <= 21.0


def test_tridiagonal_matvec_matches_scipy_sparse():
    env = ct.tridiagonal_multitask_env(50, seed=4)
    x = np.random.default_rng(5).normal(size=50)
    np.testing.assert_allclose(env._cost_matvec(torch.as_tensor(x)).numpy(), env.C.to_scipy() @ x, atol=1e-14)


# ------------------------------------------------------------------ hypergradients

@pytest.mark.parametrize("r,c,sigma2,beta", [(1.0, 1.0, 1.0, 0.3), (2.0, 0.5, 1.5, -0.4), (0.5, 2.0, 0.3, 1.7)])
def test_hypergradient_matches_holmstrom_milgrom_derivative(r, c, sigma2, beta):
    env = ct.CaraNormal(r, c, sigma2)
    expected = (1 - beta * (1 + r * c * sigma2)) / c  # derivative of beta(2 - beta - r c s2 beta)/(2c)
    assert ct.hypergradient(env, [beta]).item() == pytest.approx(expected, abs=1e-12)


def test_hypergradient_matches_multitask_gradient_formula():
    n = 6
    C, Sigma = spd(n, 7), spd(n, 8, shift=0.3)
    b = np.random.default_rng(9).uniform(0.5, 1.5, n)
    beta = np.random.default_rng(10).normal(size=n)
    env = ct.MultiTaskCaraNormal(0.8, C, Sigma, b)
    expected = -0.8 * Sigma @ beta + np.linalg.solve(C, b - beta)
    np.testing.assert_allclose(ct.hypergradient(env, beta).numpy(), expected, atol=1e-11)


def test_hypergradient_matches_poisson_derivative():
    env = ct.CaraPoisson(1.5, 0.7)
    beta = 0.45
    y = math.exp(-1.5 * beta)
    phi = (1 - y) / 1.5
    expected = (y * (1 + phi - beta) - phi) / 0.7
    assert ct.hypergradient(env, [beta]).item() == pytest.approx(expected, abs=1e-12)


def test_hypergradient_matches_tournament_derivative():
    env = ct.Tournament(1.3, 0.8, 0.9, 0.5)
    spread = 0.7
    a_coef, b_coef = 1 / (0.8 * 0.9 * math.sqrt(math.pi)), 1 / (0.8 * 1.3 * 0.81 * math.pi)
    u = math.tanh(1.3 * spread / 2)
    # d/dDelta of (A u - B u^2/2 + log(1-u^2)/2)/r with du/dDelta = r(1-u^2)/2
    expected = 0.5 * (1 - u**2) * (a_coef - b_coef * u - u / (1 - u**2))
    assert ct.hypergradient(env, [spread]).item() == pytest.approx(expected, abs=1e-10)


ENVIRONMENTS = {
    "single": (ct.CaraNormal(1.0, 1.0, 1.0), [0.3]),
    "multitask": (ct.random_multitask_env(5, seed=3), np.linspace(0.1, 0.9, 5)),
    "poisson": (ct.CaraPoisson(1.0, 1.0), [0.4]),
    "logistic": (ct.CappedLogisticPay(1.0, 1.0, 1.0, cap=2.0), [1.5, 1.2, 0.3]),
    "rpe": (ct.LinearRPE(1.0, 1.0, 1.0, 1.5, n_agents=3), [0.4, 0.5]),
    "tournament": (ct.Tournament(1.0, 1.0, 1.0, 0.5), [1.1]),
    "sample average": (ct.CaraNormal(1.0, 1.0, 1.0, noise=np.random.default_rng(0).normal(size=64)), [0.6]),
}


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_hypergradient_matches_finite_differences(name):
    env, theta = ENVIRONMENTS[name]
    implicit = ct.hypergradient(env, theta).numpy()
    finite = ct.finite_difference_gradient(env, theta)
    assert np.abs(implicit - finite).max() <= 1e-7 * max(1.0, np.abs(finite).max())


def test_dense_hypergradient_matches_matrix_free():
    env = ct.tridiagonal_multitask_env(300, seed=1)
    theta = torch.full((300,), 0.4, dtype=torch.float64)
    gap = (ct.dense_hypergradient(env, theta) - ct.hypergradient(env, theta)).abs().max().item()
    assert gap <= 1e-11


def test_inexact_adjoint_biases_hypergradient_in_proportion():
    env = ct.tridiagonal_multitask_env(500, seed=2)
    theta = torch.full((500,), 0.4, dtype=torch.float64)
    exact = ct.hypergradient(env, theta)
    errors = [(ct.hypergradient(env, theta, rtol=tol) - exact).norm().item() for tol in (1e-2, 1e-4, 1e-6)]
    assert errors[0] > errors[1] > errors[2] and errors[2] <= 1e-5


# ------------------------------------------------------------------ closed forms and oracles

@pytest.mark.parametrize("seed", range(5))
def test_solve_recovers_holmstrom_milgrom(seed):
    r, c, sigma2 = 2.0, 0.5, 1.5
    result = ct.solve(ct.CaraNormal(r, c, sigma2), seed=seed)
    assert result.converged
    assert result.beta == pytest.approx(1 / (1 + r * c * sigma2), abs=1e-9)
    assert result.profit == pytest.approx(1 / (2 * c * (1 + r * c * sigma2)), abs=1e-12)


def test_holmstrom_milgrom_fixed_wage_makes_participation_bind():
    r, c, sigma2 = 2.0, 0.5, 1.5
    opt = ct.CaraNormal(r, c, sigma2).optimum()
    beta = opt["beta"]
    a = beta / c
    ce = opt["alpha"] + beta * a - c * a**2 / 2 - r * beta**2 * sigma2 / 2
    assert ce == pytest.approx(0.0, abs=1e-14)


def test_solve_recovers_multitask_closed_form():
    n = 7
    C, Sigma = spd(n, 11), spd(n, 12, shift=0.3)
    b = np.random.default_rng(13).uniform(0.5, 1.5, n)
    env = ct.MultiTaskCaraNormal(1.2, C, Sigma, b)
    result = ct.solve(env, seed=0)
    expected = np.linalg.solve(np.eye(n) + 1.2 * C @ Sigma, b)
    assert result.converged
    np.testing.assert_allclose(result.beta, expected, atol=1e-9)
    assert result.profit == pytest.approx(0.5 * b @ np.linalg.solve(C + 1.2 * C @ Sigma @ C, b), abs=1e-12)


def test_diagonal_multitask_optimum_is_per_task():
    costs, variances, b = np.array([1.0, 2.0, 0.5]), np.array([0.5, 1.0, 2.0]), np.array([1.0, 0.7, 1.3])
    env = ct.MultiTaskCaraNormal(0.9, np.diag(costs), variances, b)
    np.testing.assert_allclose(env.optimum_beta(), b / (1 + 0.9 * costs * variances), atol=1e-14)


def test_sparse_scaling_oracle_matches_dense_solve():
    env = ct.tridiagonal_multitask_env(200, seed=5)
    dense = np.eye(200) + env.r * env.C.to_scipy().toarray() @ np.diag(env.Sigma)
    np.testing.assert_allclose(env.optimum_beta(), np.linalg.solve(dense, env.b_np), atol=1e-12)


def test_solve_reaches_sparse_solution_at_ten_thousand_tasks():
    env = ct.tridiagonal_multitask_env(10_000, seed=0)
    result = ct.solve(env, theta0=np.zeros(10_000), keep_trajectory=False)
    reference = env.optimum_beta()
    assert result.converged
    assert np.linalg.norm(result.beta - reference) / np.linalg.norm(reference) <= 1e-9


@pytest.mark.parametrize("r", [0.25, 1.0, 4.0])
def test_poisson_solution_is_the_brent_root_of_the_principal_foc(r):
    def foc(beta):
        y = math.exp(-r * beta)
        return r * y * (1 - beta) - (1 - y) ** 2

    root = brentq(foc, 1e-9, 1.0, xtol=1e-15)
    result = ct.solve(ct.CaraPoisson(r, 1.0), seed=1)
    assert result.converged and result.beta == pytest.approx(root, abs=1e-9)


def test_poisson_foc_has_one_sign_change_and_beta_tends_to_one():
    env = ct.CaraPoisson(1.0, 1.0)
    values = np.array([env.foc(b) for b in np.linspace(1e-6, 3.0, 3001)])
    assert np.count_nonzero(np.diff(np.sign(values))) == 1
    assert ct.CaraPoisson(1e-4, 1.0).optimum_beta() == pytest.approx(1.0, abs=1e-3)


def test_poisson_without_positive_bonus_has_no_best_response():
    with pytest.raises(ct.BestResponseError):
        ct.CaraPoisson(1.0, 1.0).best_response(torch.tensor([-0.1], dtype=torch.float64))


def test_quadratic_cost_poisson_local_response_solves_foc_and_fails_past_edge():
    env = ct.CaraPoissonQuadraticCost(1.0, 1.0)
    beta = 0.3
    a = env.best_response(torch.tensor([beta], dtype=torch.float64)).item()
    phi = (1 - math.exp(-beta)) / 1.0
    assert math.exp(a) * phi == pytest.approx(1.0 * a, abs=1e-12) and a < 1
    with pytest.raises(ct.BestResponseError):
        env.best_response(torch.tensor([env.edge_beta() + 1e-3], dtype=torch.float64))


def test_quadratic_cost_poisson_solve_stops_at_the_edge_and_says_so():
    env = ct.CaraPoissonQuadraticCost(1.0, 1.0)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = ct.solve(env, theta0=[0.2], max_steps=200)
    assert not result.converged
    assert result.beta == pytest.approx(env.edge_beta(), abs=1e-6)


def test_tournament_matches_independent_root_of_the_principal_foc():
    env = ct.Tournament(1.0, 1.0, 1.0, 2.0)
    a_coef, b_coef = 1 / math.sqrt(math.pi), 1 / math.pi
    u = brentq(lambda x: a_coef - b_coef * x - x / (1 - x**2), 1e-12, 1 - 1e-12, xtol=1e-15)
    result = ct.solve(env, seed=0)
    assert result.prize_spread == pytest.approx(2 * math.atanh(u), abs=1e-10)


def test_tournament_win_probability_slope_at_symmetry():
    sigma, h = 0.7, 1e-6
    slope = (ndtr(h / (sigma * math.sqrt(2))) - ndtr(-h / (sigma * math.sqrt(2)))) / (2 * h)
    assert slope == pytest.approx(1 / (2 * sigma * math.sqrt(math.pi)), rel=1e-8)


def test_tournament_symmetric_equilibrium_survives_global_deviations():
    env = ct.Tournament(1.0, 1.0, 1.0, 0.0)
    for spread in (0.3, 0.8, 2.0):
        assert env.deviation_gain(spread) <= 1e-9


def test_rpe_matches_closed_form_for_three_agents():
    env = ct.LinearRPE(1.0, 1.0, 1.0, 1.5, n_agents=3)
    result = ct.solve(env, seed=0)
    m, e2 = 2, 2.25
    gamma = m * e2 / (m * e2 + 1.0)
    v = (3 * e2 + 1.0) / (m * e2 + 1.0)
    assert result.gamma == pytest.approx(gamma, abs=1e-8)
    assert result.beta == pytest.approx(1 / (1 + v), abs=1e-8)


def test_logistic_first_order_is_the_gradient_of_the_agent_ce():
    env = ct.CappedLogisticPay(1.3, 0.8, 0.9, cap=3.0)
    theta = torch.tensor([2.0, 1.7, 0.2], dtype=torch.float64)
    for a in (-0.5, 0.3, 1.1):
        action = torch.tensor([a], dtype=torch.float64)
        autodiff = torch.func.grad(env.agent_utility, argnums=1)(theta, action)
        assert env.first_order(theta, action).item() == pytest.approx(autodiff.item(), abs=1e-12)


def test_logistic_expectation_matches_adaptive_quadrature():
    env = ct.CappedLogisticPay(1.0, 1.0, 1.0)
    theta, a = [1.0, 4.0, -0.1], 0.35
    profit_torch = env.principal_profit(torch.tensor(theta, dtype=torch.float64), torch.tensor([a], dtype=torch.float64))

    def expectation(f):
        integrand = lambda z: f(theta[0] * expit(theta[1] * (a + z - theta[2]))) * math.exp(-z * z / 2)
        return quad(integrand, -12, 12, epsabs=1e-15, epsrel=1e-13, limit=200)[0] / math.sqrt(2 * math.pi)

    premium = expectation(lambda g: g) + math.log(expectation(lambda g: math.exp(-g)))
    assert profit_torch.item() == pytest.approx(a - a**2 / 2 - premium, abs=1e-11)


def test_logistic_projection_keeps_cap_and_slope_bound():
    env = ct.CappedLogisticPay(1.0, 1.0, 0.5, cap=2.0, max_slope=8.0)
    projected = env.project(torch.tensor([3.0, 40.0, -1.0], dtype=torch.float64)).tolist()
    assert projected == [2.0, 16.0, -1.0]  # beta <= B, gamma * sigma <= max_slope


def test_logistic_quadrature_is_exact_at_the_slope_bound():
    env = ct.CappedLogisticPay(1.0, 1.0, 1.0, max_slope=8.0)
    theta, a = [1.0, 8.0, -0.3], 0.2
    ce = env.agent_utility(torch.tensor(theta, dtype=torch.float64), torch.tensor([a], dtype=torch.float64)).item()
    integrand = lambda z: math.exp(-expit(theta[1] * (a + z - theta[2]))) * math.exp(-z * z / 2)
    mean = quad(integrand, -12, 12, points=[theta[2] - a], epsabs=1e-15, epsrel=1e-13, limit=200)[0]
    assert ce == pytest.approx(-math.log(mean / math.sqrt(2 * math.pi)) - a * a / 2, abs=1e-12)


def test_logistic_linear_limit_gap_shrinks_like_gamma_squared():
    hm = ct.profit(ct.CaraNormal(1.0, 1.0, 1.0), [0.4])
    env = ct.CappedLogisticPay(1.0, 1.0, 1.0)
    gaps = [abs(ct.profit(env, [1.6 / g, g, 0.0]) - hm) for g in (0.2, 0.1)]
    assert gaps[0] / gaps[1] == pytest.approx(4.0, rel=0.1)


def test_capped_logistic_solution_satisfies_kkt_and_matches_oracle():
    env = ct.CappedLogisticPay(1.0, 1.0, 1.0, cap=2.0)
    result = ct.solve(env, seed=0)
    gradient = ct.hypergradient(env, result.theta).numpy()
    assert result.converged and result.beta == 2.0 and gradient[0] > 0
    assert np.abs(gradient[1:]).max() <= 1e-9
    oracle = ct.logistic_optimum_oracle(1.0, 1.0, 1.0, 2.0, starts=1, seed=0)
    assert result.profit == pytest.approx(oracle["profit"], abs=1e-6)
    assert result.profit < 0.5  # below the first best 1/(2c)


def test_sample_average_premium_matches_centred_log_mean_exp():
    draws = np.random.default_rng(3).normal(size=40)
    env = ct.CaraNormal(1.7, 1.0, 1.0, noise=draws)
    beta = 0.6
    centred = draws - draws.mean()
    expected = logsumexp(-1.7 * beta * centred) / 1.7 - math.log(40) / 1.7
    assert env.risk_premium(torch.tensor([beta], dtype=torch.float64)).item() == pytest.approx(expected, abs=1e-13)


def test_batched_sample_average_equals_independent_solves():
    draws = np.random.default_rng(4).normal(size=(3, 16))
    batch = ct.solve(ct.CaraNormal(1.0, 1.0, 1.0, noise=draws), theta0=np.full(3, 0.5)).beta
    single = [ct.solve(ct.CaraNormal(1.0, 1.0, 1.0, noise=row), theta0=[0.5]).beta for row in draws]
    np.testing.assert_allclose(batch, single, atol=1e-9)


def test_antithetic_draws_are_negated_pairs():
    draws = ct.normal_draws(np.random.default_rng(0), 4, 10, antithetic=True)
    np.testing.assert_array_equal(draws[:, 5:], -draws[:, :5])
    with pytest.raises(ValueError, match="even"):
        ct.normal_draws(np.random.default_rng(0), 4, 9, antithetic=True)


def test_normal_trapezoid_integrates_the_normal_mgf():
    # Tilts up to e^{z} shift the mass by one sd; truncation at 8 sd then costs ~e^{-24.5}.
    z, w = ct.normal_trapezoid(161)
    for t in (0.5, 1.0):
        assert w @ np.exp(t * z) == pytest.approx(math.exp(t * t / 2), rel=1e-11)


# ------------------------------------------------------------------ failure reporting and bad input

def test_solve_that_runs_out_of_steps_warns_and_flags():
    env = ct.random_multitask_env(5, seed=0)
    with pytest.warns(RuntimeWarning, match="step budget"):
        result = ct.solve(env, seed=0, max_steps=2)
    assert not result.converged and "step budget" in result.reason and result.steps == 2


@pytest.mark.parametrize("build,name", [
    (lambda: ct.CaraNormal(0.0, 1.0, 1.0), "r"),
    (lambda: ct.CaraNormal(1.0, -1.0, 1.0), "c"),
    (lambda: ct.CaraNormal(1.0, 1.0, 0.0), "sigma2"),
    (lambda: ct.CaraPoisson(-1.0, 1.0), "r"),
    (lambda: ct.CappedLogisticPay(1.0, 1.0, float("nan")), "sigma"),
    (lambda: ct.CappedLogisticPay(1.0, 1.0, 1.0, cap=0.0), "cap"),
    (lambda: ct.CappedLogisticPay(1.0, 1.0, 1.0, max_slope=0.0), "max_slope"),
    (lambda: ct.Tournament(1.0, 1.0, 1.0, -0.5), "sigma_common"),
    (lambda: ct.LinearRPE(1.0, 1.0, 1.0, 0.5, n_agents=1), "n_agents"),
    (lambda: ct.MultiTaskCaraNormal(1.0, np.array([[1.0, 0.5], [0.0, 1.0]]), np.ones(2), np.ones(2)), "C must be symmetric"),
    (lambda: ct.MultiTaskCaraNormal(1.0, np.array([[1.0, 2.0], [2.0, 1.0]]), np.ones(2), np.ones(2)), "C must be positive"),
    (lambda: ct.MultiTaskCaraNormal(1.0, np.eye(2), np.array([[1.0, 2.0], [2.0, 1.0]]), np.ones(2)), "Sigma must be positive"),
    (lambda: ct.MultiTaskCaraNormal(1.0, np.eye(2), np.array([1.0, -1.0]), np.ones(2)), "Sigma must be positive"),
    (lambda: ct.MultiTaskCaraNormal(1.0, np.eye(3), np.ones(2), np.ones(2)), "C has shape"),
    (lambda: ct.MultiTaskCaraNormal(1.0, np.eye(2), np.ones(3), np.ones(2)), "Sigma has shape"),
    (lambda: ct.MultiTaskCaraNormal(1.0, ct.Tridiagonal([1.0, 1.0], [3.0]), np.ones(2), np.ones(2)), "C must be positive"),
    (lambda: ct.tridiagonal_multitask_env(-5), "n must be"),
])
def test_bad_input_raises_value_error_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_stalled_solve_reports_the_agents_vanishing_curvature():
    env = ct.CaraPoissonQuadraticCost(1.0, 1.0)
    result = ct.solve(env, theta0=[0.2], max_steps=200, warn=False)
    # -H = c(1 - a) for this model, computed here by hand at the returned action.
    assert result.agent_curvature == pytest.approx(1.0 - result.action[0], rel=1e-6)
    assert "agent curvature" in result.reason


def test_traced_product_for_constant_jacobian_equals_minus_c_times_u():
    env = ct.tridiagonal_multitask_env(200, seed=6)
    theta = torch.full((200,), 0.3, dtype=torch.float64)
    u = torch.as_tensor(np.random.default_rng(7).normal(size=200))
    traced = ct._negative_jacobian_product(env, theta, env.best_response(theta))(u)
    np.testing.assert_allclose(traced.numpy(), env.C.to_scipy() @ u.numpy(), atol=1e-13)
    # A second environment gets its own trace (the cache lives on the instance).
    other = ct.tridiagonal_multitask_env(200, seed=8)
    np.testing.assert_allclose(ct._negative_jacobian_product(other, theta, theta)(u).numpy(),
                               other.C.to_scipy() @ u.numpy(), atol=1e-13)


# ------------------------------------------------------------------ generic inner solver

GENERIC_CASES = {
    "single task": (ct.CaraNormal(2.0, 0.5, 1.5), [0.7]),
    "sample average": (ct.CaraNormal(1.0, 1.0, 1.0, noise=np.random.default_rng(1).normal(size=(3, 8))),
                       [0.2, 0.5, 0.9]),
    "Poisson": (ct.CaraPoisson(4.0, 1.0), [0.05]),
    "Poisson, quadratic cost": (ct.CaraPoissonQuadraticCost(1.0, 1.0), [0.3]),
    "RPE": (ct.LinearRPE(1.0, 1.0, 1.0, 1.5, n_agents=3), [0.4, 0.5]),
    "tournament": (ct.Tournament(1.3, 0.8, 0.9, 2.0), [0.9]),
    "tournament, unequal exposure": (ct.Tournament(1.0, 1.0, 1.0, 2.0, loadings=(1.0, 0.4)), [1.1]),
}


@pytest.mark.parametrize("name", list(GENERIC_CASES))
def test_generic_newton_best_response_matches_the_closed_form_oracle(name):
    env, theta = GENERIC_CASES[name]
    theta = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    # The solver's best response is Newton's method on G; no closed form is used by it.
    assert type(env).best_response in (ct.ContractEnv.best_response, ct.CaraPoisson.best_response)
    generic = env.best_response(theta).numpy()
    np.testing.assert_allclose(generic, env.closed_form_response(theta).numpy(), rtol=0, atol=1e-11)


def test_best_response_fails_past_the_quadratic_cost_edge_and_the_oracle_at_it():
    env = ct.CaraPoissonQuadraticCost(1.0, 1.0)
    with pytest.raises(ct.BestResponseError, match="second-order condition"):
        env.best_response(torch.tensor([env.edge_beta() + 1e-3], dtype=torch.float64))
    # At the edge phi/c = 1/e exactly: the critical point a = 1 is an inflection point (U'' = 0).
    with pytest.raises(ct.BestResponseError, match="1/e"):
        env.closed_form_response(torch.tensor([env.edge_beta()], dtype=torch.float64))


# ------------------------------------------------------------------ CARA-Poisson, quadratic cost (P2)

def lambert_branch(r, c, beta):
    from scipy.special import lambertw

    phi = (1 - math.exp(-r * beta)) / r
    return -lambertw(-phi / c, 0).real


def test_response_slope_matches_finite_differences_of_the_lambert_branch():
    env = ct.CaraPoissonQuadraticCost(1.0, 1.0)
    h = 1e-6
    finite = (lambert_branch(1.0, 1.0, 0.3 + h) - lambert_branch(1.0, 1.0, 0.3 - h)) / (2 * h)
    assert finite == pytest.approx(1.740, abs=1e-3)  # the value without the factor e^a is 1.192
    assert env.response_slope(0.3) == pytest.approx(finite, rel=1e-7)


def branch_profit(r, c, beta):
    a = lambert_branch(r, c, beta)
    lam, phi = math.exp(a), (1 - math.exp(-r * beta)) / r
    return lam - c * a * a / 2 - lam * (beta - phi)


@pytest.mark.parametrize("r,c,beta", [(1.0, 1.0, 0.2), (1.0, 1.0, 0.45), (3.0, 0.8, 0.4)])
def test_branch_profit_slope_matches_finite_differences(r, c, beta):
    env, h = ct.CaraPoissonQuadraticCost(r, c), 1e-6
    finite = (branch_profit(r, c, beta + h) - branch_profit(r, c, beta - h)) / (2 * h)
    assert env.branch_profit_slope(beta) == pytest.approx(finite, rel=1e-6, abs=1e-8)


def test_branch_profit_rises_to_the_edge_for_r_c_one_but_not_for_every_model():
    increasing = ct.CaraPoissonQuadraticCost(1.0, 1.0)
    grid = np.linspace(1e-4, increasing.edge_beta() * (1 - 1e-9), 2000)
    assert min(increasing.branch_profit_slope(b) for b in grid) > 0
    # r = 3, c = 0.8: profit falls on part of the branch, so an interior optimum exists ...
    other = ct.CaraPoissonQuadraticCost(3.0, 0.8)
    grid = np.linspace(1e-4, other.edge_beta() * (1 - 1e-9), 2000)
    slopes = np.array([other.branch_profit_slope(b) for b in grid])
    assert slopes.min() < 0
    # ... yet near the edge it always rises (da/dbeta -> infinity while 1 - beta > 0).
    assert slopes[-1] > 0
    result = ct.solve(other, theta0=[0.1])
    assert result.converged and result.beta < other.edge_beta() - 0.05
    assert other.branch_profit_slope(result.beta) == pytest.approx(0.0, abs=1e-8)


# ------------------------------------------------------------------ tournament with a simulated common shock

@pytest.mark.parametrize("loadings", [(1.0, 1.0), (1.0, 0.3)])
def test_tournament_win_probability_matches_brute_force_monte_carlo_with_explicit_shock(loadings):
    env = ct.Tournament(1.0, 1.0, 0.8, 2.0, loadings=loadings)
    rng = np.random.default_rng(0)
    n, a1, a2 = 2_000_000, 0.4, 0.1
    eta = rng.normal(size=n)  # one common draw for both agents
    x1 = a1 + loadings[0] * 2.0 * eta + 0.8 * rng.normal(size=n)
    x2 = a2 + loadings[1] * 2.0 * eta + 0.8 * rng.normal(size=n)
    frequency = np.mean(x1 > x2)
    p1 = env._win_probabilities(torch.tensor([a1, a2], dtype=torch.float64))[0].item()
    assert abs(frequency - p1) <= 4 * math.sqrt(p1 * (1 - p1) / n)


def test_tournament_quadrature_matches_the_effective_noise_closed_form():
    env = ct.Tournament(1.0, 1.0, 1.0, 3.0, loadings=(1.0, 0.3))
    p1 = env._win_probabilities(torch.tensor([0.4, 0.1], dtype=torch.float64))[0].item()
    effective = math.sqrt(2 * 1.0 + 0.7**2 * 9.0)  # sd of x1 - x2 given the efforts
    assert p1 == pytest.approx(ndtr(0.3 / effective), abs=1e-12)


def cubic_root_spread(r, c, sigma):
    a_coef, b_coef = 1 / (c * sigma * math.sqrt(math.pi)), 1 / (c * r * sigma**2 * math.pi)
    u = brentq(lambda x: a_coef - b_coef * x - x / (1 - x**2), 1e-12, 1 - 1e-12, xtol=1e-15)
    return 2 * math.atanh(u) / r


def test_tournament_with_unequal_exposure_feels_the_common_shock():
    # With loadings (1, 0.5) the shock does not cancel: the optimum is the cubic's at
    # sigma_eff^2 = sigma^2 + 0.25 sigma_eta^2 / 2, far from the one that ignores the shock.
    env = ct.Tournament(1.0, 1.0, 1.0, 2.0, loadings=(1.0, 0.5))
    result = ct.solve(env, seed=0)
    expected = cubic_root_spread(1.0, 1.0, math.sqrt(1.0 + 0.25 * 4.0 / 2))
    assert result.converged and result.prize_spread == pytest.approx(expected, abs=1e-10)
    assert abs(result.prize_spread - cubic_root_spread(1.0, 1.0, 1.0)) > 0.05


def test_tournament_with_equal_exposure_is_flat_in_the_simulated_common_shock():
    results = [ct.solve(ct.Tournament(1.0, 1.0, 1.0, shock), seed=0) for shock in (0.0, 1.5, 3.0)]
    expected = cubic_root_spread(1.0, 1.0, 1.0)
    for result in results:
        assert result.converged and result.prize_spread == pytest.approx(expected, abs=1e-10)
    profits = [result.profit for result in results]
    assert max(profits) - min(profits) <= 1e-12


def test_tournament_rejects_bad_loadings_and_nodes():
    with pytest.raises(ValueError, match="loadings"):
        ct.Tournament(1.0, 1.0, 1.0, 1.0, loadings=(1.0, float("nan")))
    with pytest.raises(ValueError, match="shock_nodes"):
        ct.Tournament(1.0, 1.0, 1.0, 1.0, shock_nodes=0)


# ------------------------------------------------------------------ sample-average bias (S9)

def numpy_sample_average_contracts(draws, r=1.0, c=1.0):
    """Independent re-implementation: Newton on (1 - b)/c = R_N'(b) for every row at once."""
    centred = draws - draws.mean(axis=1, keepdims=True)
    b = np.full(draws.shape[0], 0.5)
    for _ in range(30):
        x = -r * b[:, None] * centred
        w = np.exp(x - x.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        slope = -(w * centred).sum(axis=1)  # R_N'(b)
        curvature = r * ((w * centred**2).sum(axis=1) - slope**2)  # R_N''(b)
        b -= ((1 - b) / c - slope) / (-1 / c - curvature)
    return b


def test_sample_average_contracts_match_an_independent_newton_solver():
    draws = np.random.default_rng(2).normal(size=(50, 16))
    np.testing.assert_allclose(ct.sample_average_contracts(draws), numpy_sample_average_contracts(draws),
                               atol=1e-9)


@pytest.mark.parametrize("size", [32, 64])
def test_sample_average_bias_matches_the_delta_method_coefficient(size):
    # N * bias = b1 + O(1/N); the O(1/N) remainder is allowed as 2/N (about 0.7/N is seen at N = 8).
    draws = np.random.default_rng(size).normal(size=(4_000_000 // size, size))
    betas = numpy_sample_average_contracts(draws)
    scaled_bias = size * (betas.mean() - 0.5)
    scaled_se = size * betas.std(ddof=1) / math.sqrt(betas.size)
    b1 = ct.saa_bias_coefficient(1.0, 1.0, 1.0)
    assert abs(scaled_bias - b1) <= 4 * scaled_se + 2 / size
    # the single term -E[D]/k of the first-order argument alone is far off
    assert abs(scaled_bias - 0.5 * math.exp(0.25) / 2) > 4 * scaled_se + 2 / size


def test_saa_bias_coefficient_closed_form_for_r_c_sigma_one():
    # beta* = 1/2, k = 2, s^2 beta^2 = 1/4: b1 = e^{1/4} (1/4 + 9/32)
    assert ct.saa_bias_coefficient(1.0, 1.0, 1.0) == pytest.approx(math.exp(0.25) * (0.25 + 9 / 32), rel=1e-14)


def test_side_by_side_marks_every_number_and_reports_the_gap():
    table = ct.side_by_side([("beta*", 0.5, 0.5 + 2e-9), ("Delta*", 1.25, 1.25)])
    lines = table.splitlines()
    assert len(lines) == 3 and "solver" in lines[0] and "oracle" in lines[0]
    assert lines[1].split() == ["beta*", "≈0.500000", "≈0.500000", "≈2e-09"]
    assert lines[2].split()[-1] == "≈0e+00"


def test_logistic_oracle_uses_every_start_and_returns_the_best():
    oracle = ct.logistic_optimum_oracle(1.0, 1.0, 1.0, 2.0, starts=3, seed=1)
    assert oracle["start_profits"].shape == (3,)
    assert oracle["profit"] >= oracle["start_profits"].max() - 1e-12
    with pytest.raises(ValueError, match="starts"):
        ct.logistic_optimum_oracle(1.0, 1.0, 1.0, 2.0, starts=0)


# ------------------------------------------------------------------ experiment helpers of the chapter

def test_cg_experiment_converges_to_the_banded_direct_solution():
    curves = ct.cg_experiment((5.0,), (200,), 60, seed=1)
    errors = curves[5.0, 200]
    assert errors[0] == 1.0 and errors[-1] <= 1e-12
    visible = errors > 1e-13  # below that, rounding, not the bound, sets the error
    assert np.all((errors <= ct.cg_error_bound(5.0, np.arange(61)) * (1 + 1e-9))[visible])


def test_compare_filters_matches_the_closed_forms():
    out = ct.compare_filters(1.0, seed=3)
    assert out["converged"]
    assert out["profit"]["individual"] == pytest.approx(1 / 6, abs=1e-12)  # 1/(2c(1 + r c (1 + 1)))
    assert max(abs(x - y) for x, y in zip(out["rpe"], out["rpe_oracle"], strict=True)) <= 1e-8
    assert out["spread"] == pytest.approx(cubic_root_spread(1.0, 1.0, 1.0), abs=1e-10)
    assert out["deviation_gain"] <= 1e-9


def test_gradient_check_gaps_and_missing_closed_form():
    env = ct.CaraNormal(2.0, 0.5, 1.5)
    with_closed = ct.gradient_check(env, [0.3], lambda t: [env.profit_gradient(t[0])])
    assert with_closed["implicit vs closed form"] <= 1e-12 and with_closed["FD vs closed form"] <= 1e-8
    assert math.isnan(ct.gradient_check(env, [0.3])["implicit vs closed form"])


def test_hypergradient_timings_cover_the_requested_sizes():
    free, dense = ct.hypergradient_timings([200, 400], [200])
    assert sorted(free) == [200, 400] and list(dense) == [200]
    assert all(seconds > 0 for seconds in [*free.values(), *dense.values()])
