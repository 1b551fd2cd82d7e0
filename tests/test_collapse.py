"""theorylab.collapse against independent oracles: NumPy covariances, isotropic Gaussians in closed form,
Monte Carlo of the NCC test statistic and of random features, brute-force loops for the contrastive losses."""
import math

import numpy as np
import pytest
import torch

from theorylab import collapse as co
from theorylab.data import ClassPopulation, gaussian_two_class


def gaussian_classes(means, sigma, n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([m + sigma * rng.normal(size=(n, len(m))) for m in means])
    return x, np.repeat(np.arange(len(means)), n)


def test_moments_match_numpy_and_conventions_convert():
    x, y = gaussian_classes([np.zeros(5), np.ones(5) * 2, -np.ones(5)], 0.7, 400)
    moments = co.class_moments(x, y)
    np.testing.assert_allclose(moments.covariances[1], np.cov(x[y == 1].T), atol=1e-12)
    assert co.cdnv(x, y, "directional") == pytest.approx(2 * co.cdnv(x, y, "ggh"))
    directional = co.directional_cdnv_matrix(moments)
    for i in range(3):
        for j in range(3):
            if i != j:
                d2 = ((moments.means[i] - moments.means[j]) ** 2).sum()
                assert directional[i, j] <= moments.variances[i] / d2 + 1e-12


def test_cdnv_of_isotropic_gaussians_has_its_closed_form():
    """v = d sigma^2 per class and d_ij^2 = |m_i - m_j|^2, so V_GGH = d sigma^2 / d_ij^2; directional = sigma^2 / d_ij^2."""
    d, sigma = 10, 0.5
    x, y = gaussian_classes([np.zeros(d), np.full(d, 1.0)], sigma, 40_000, seed=1)
    assert co.cdnv(x, y) == pytest.approx(d * sigma**2 / d, rel=0.02)
    assert co.directional_cdnv(x, y) == pytest.approx(sigma**2 / d, rel=0.03)


def test_trace_nc1_equals_kernel_nc1_of_the_linear_kernel():
    x, y = gaussian_classes([np.zeros(4), np.ones(4), np.arange(4.0)], 0.3, 50, seed=2)
    assert co.kernel_nc1(x @ x.T, y) == pytest.approx(co.nc1(x, y, "trace"), rel=1e-10)
    assert co.nc1(x, y, "papyan") > 0


def test_ncc_statistic_variance_matches_monte_carlo_for_skewed_classes():
    """Lemma L1 / T1: simulate X_ij = <e,D> + <e,a-b> - <b,D> - (|a|^2 - |b|^2)/2 directly (centred exponential
    classes of different scales, so fourth moments and kappa_j matter) and compare its variance with T1's
    formula and its mean with -(v_i - v_j)/(2n), where v = sum of squared scales exactly."""
    rng = np.random.default_rng(3)
    n, trials = 2, 400_000
    scales = {0: np.array([1.0, 0.5, 0.3]), 1: np.array([1.6, 0.4, 0.9])}
    means = {0: np.zeros(3), 1: np.array([1.5, 0.5, 0.0])}
    noise = lambda c, size: (rng.exponential(1.0, size=(size, 3)) - 1.0) * scales[c]
    population = np.concatenate([means[c] + noise(c, trials) for c in (0, 1)])
    moments = co.class_moments(population, np.repeat([0, 1], trials))
    e = noise(0, trials)
    a = np.mean([noise(0, trials) for _ in range(n)], axis=0)
    b = np.mean([noise(1, trials) for _ in range(n)], axis=0)
    D = means[0] - means[1]
    X = e @ D + (e * (a - b)).sum(1) - b @ D - 0.5 * ((a**2).sum(1) - (b**2).sum(1))
    assert X.var() == pytest.approx(co.ncc_pair_variance(moments, 0, 1, n), rel=0.02)
    expected_mean = -((scales[0] ** 2).sum() - (scales[1] ** 2).sum()) / (2 * n)
    assert abs(X.mean() - expected_mean) < 4 * X.std() / math.sqrt(trials)


def test_ncc_pair_bound_holds_and_tends_to_the_cantelli_limit():
    x, y = gaussian_classes([np.zeros(6), np.r_[2.0, np.zeros(5)]], 0.6, 50_000, seed=4)
    moments = co.class_moments(x, y)
    per_class = [x[y == 0], x[y == 1]]
    for shots in (1, 3, 10):
        error, se = co.fewshot_error(per_class, 2, shots, 50, 300, seed=shots)
        assert error <= co.ncc_bound(moments, shots) + 3 * se
    directional = co.directional_cdnv_matrix(moments)[0, 1]
    assert co.ncc_pair_bound(moments, 0, 1, 10**8) == pytest.approx(4 * directional / (1 + 4 * directional), rel=1e-5)


def test_bound_preconditions_raise_clear_errors():
    x, y = gaussian_classes([np.zeros(3), np.full(3, 0.1)], 3.0, 200, seed=5)
    moments = co.class_moments(x, y)
    with pytest.raises(ValueError, match="m >= 10"):
        co.directional_bound_paper(moments, 5)
    with pytest.raises(ValueError, match="shots"):
        co.ncc_pair_bound(moments, 0, 1, 0)
    lopsided = co.ClassMoments(moments.classes, np.array([[0.0], [0.1]]), np.array([[[9.0]], [[0.01]]]),
                               np.array([81.0, 1e-4]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="t_ij > 0"):
        co.ncc_pair_bound(lopsided, 0, 1, 1)


def test_pairs_outside_t1_get_the_trivial_bound_one():
    x, y = gaussian_classes([np.zeros(3), np.full(3, 0.1)], 3.0, 200, seed=5)
    lopsided = co.ClassMoments(co.class_moments(x, y).classes, np.array([[0.0], [0.1]]),
                               np.array([[[9.0]], [[0.01]]]), np.array([81.0, 1e-4]), np.zeros((2, 1)))
    # t_01 = d^2/2 (1 + (v_1 - v_0)/(n d^2)) < 0 at one shot, t_10 > 0: only (0, 1) is trivial.
    assert co.ncc_pair_margin(lopsided, 0, 1, 1) == pytest.approx(0.01 / 2 * (1 + (0.01 - 9.0) / 0.01))
    assert co.ncc_trivial_pairs(lopsided, 1) == 1
    assert co.ncc_bound(lopsided, 1) == pytest.approx((1.0 + co.ncc_pair_bound(lopsided, 1, 0, 1)) / 2)
    with pytest.raises(ValueError, match="two classes"):
        co.cdnv(x[:10], np.zeros(10))


def brute_force_loss(z1, z2, labels, tau, supervised):
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).double()
    n = len(z1)
    both = list(labels) * 2
    total = 0.0
    for k in range(2 * n):
        positive = float(z[k] @ z[(k + n) % (2 * n)]) / tau
        terms = [math.exp(float(z[k] @ z[m]) / tau) for m in range(2 * n)
                 if m % n != k % n and not (supervised and both[m] == both[k])]
        total += math.log(sum(terms)) - positive
    return total / (2 * n)


def test_contrastive_losses_match_brute_force_loops_and_the_gap_bound():
    torch.manual_seed(0)
    z1, z2 = torch.randn(12, 5), torch.randn(12, 5)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    for tau in (1.0, 0.5):
        dcl, nscl = co.dcl_loss(z1, z2, tau), co.nscl_loss(z1, z2, labels, tau)
        assert float(dcl) == pytest.approx(brute_force_loss(z1, z2, labels.tolist(), tau, False), rel=1e-5)
        assert float(nscl) == pytest.approx(brute_force_loss(z1, z2, labels.tolist(), tau, True), rel=1e-5)
        assert 0 <= float(dcl - nscl) <= co.dcl_nscl_gap_bound(labels, tau)


def test_gap_is_exact_when_every_cross_sample_similarity_is_equal():
    """Orthogonal samples, identical views: every cross-sample cosine is 0."""
    z = torch.eye(16)
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 8)
    gap = float(co.dcl_loss(z, z) - co.nscl_loss(z, z, labels))
    assert gap == pytest.approx(co.equal_similarity_gap(labels), rel=1e-6)


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_kernels_match_random_features(activation):
    """Monte Carlo with 400,000 hidden units: K = E[s(w.x) s(w.x')], NTK - K = S E[s'(w.x) s'(w.x')]."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(5, 3))
    W = rng.normal(size=(3, 400_000)) / math.sqrt(3)
    U = X @ W
    if activation == "erf":
        from scipy.special import erf
        phi, dphi = erf(U), 2 / math.sqrt(math.pi) * np.exp(-U**2)
    else:
        phi, dphi = np.maximum(U, 0), (U > 0).astype(float)
    nngp = phi @ phi.T / W.shape[1]
    np.testing.assert_allclose(co.nngp_kernel(X, activation), nngp, atol=0.01)
    np.testing.assert_allclose(co.ntk_kernel(X, activation) - co.nngp_kernel(X, activation),
                               (X @ X.T / 3) * (dphi @ dphi.T / W.shape[1]), atol=0.02)


def test_population_views_share_content_and_two_class_data_is_balanced():
    population = ClassPopulation(seed=0)
    classes = population.draw_classes(3, seed=1)
    v1, v2, labels = population.augment(classes, 4, seed=2)
    assert v1.shape == v2.shape == (12, 64) and not np.allclose(v1, v2)
    x, y = gaussian_two_class(10, 8, seed=0)
    assert x.shape == (20, 8) and (y == 0).sum() == 10 and x[y == 0].mean() < 0 < x[y == 1].mean()


def test_many_shot_limits_of_t1_and_t2_differ_as_in_closed_form():
    """Isotropic-free check: with two 1-D Gaussian classes at distance d and variance s^2, Vtilde = s^2/d^2, so
    T1 -> 4Vt/(1+4Vt) and T2 -> 4Vt; the old chapter drew 4Vt as the limit of both."""
    x, y = gaussian_classes([np.zeros(3), np.r_[3.0, 0.0, 0.0]], 0.8, 50_000, seed=7)
    moments = co.class_moments(x, y)
    vt = 0.8**2 / 9
    assert co.ncc_limit_bound(moments) == pytest.approx(4 * vt / (1 + 4 * vt), rel=0.02)
    assert co.directional_limit(moments) == pytest.approx(4 * vt, rel=0.02)
    assert co.ncc_pair_bound(moments, 0, 1, 10**9) == pytest.approx(co.ncc_limit_bound(moments), rel=1e-3)
    assert co.directional_bound_paper(moments, 10**9) == pytest.approx(co.directional_limit(moments), rel=1e-3)
    assert co.ncc_limit_bound(moments) < 0.8 * co.directional_limit(moments)


def test_gaussian_ncc_error_matches_normal_cdf_and_brute_force_episodes():
    """Exact centres: Phi(-d / (2 sigma_par)) from scipy; finite shots: plain Monte Carlo episodes."""
    from scipy.stats import norm

    scale = np.r_[0.8, np.full(15, 0.6)]
    mean = np.r_[1.5, np.zeros(15)]
    assert co.gaussian_ncc_error(-mean, mean, scale)[0] == pytest.approx(norm.cdf(-1.5 / 0.8), rel=1e-12)
    rng = np.random.default_rng(8)
    classes = [rng.normal(size=(20_000, 16)) * scale + sign * mean for sign in (-1, 1)]
    for shots in (2, 10):
        semi, semi_se = co.gaussian_ncc_error(-mean, mean, scale, shots, draws=20_000, seed=shots)
        error, se = co.fewshot_error(classes, 2, shots, 100, 1500, seed=shots)
        assert abs(error - semi) < 4 * math.hypot(se, semi_se)
    assert co.gaussian_ncc_error(-mean, mean, scale, 2)[0] > co.gaussian_ncc_error(-mean, mean, scale)[0] + 0.01
    with pytest.raises(ValueError, match="scale positive"):
        co.gaussian_ncc_error(-mean, mean, -scale)


def test_pairwise_ncc_error_matches_two_way_episodes_and_the_gaussian_formula():
    """Three 4-D Gaussian classes on a line: E[0,1] and E[1,0] against the semi-analytic 2-way error, E[0,2]
    (twice as far) against the same formula, and the mean of E[0,1], E[1,0] against fewshot_error on the pair."""
    scale = np.full(4, 1.0)
    means = [np.zeros(4), np.r_[2.0, 0, 0, 0], np.r_[4.0, 0, 0, 0]]
    rng = np.random.default_rng(9)
    classes = [m + rng.normal(size=(3000, 4)) * scale for m in means]
    E = co.pairwise_ncc_error(classes, 5, 200, 300, seed=1)
    assert np.all(np.diag(E) == 0)
    near = co.gaussian_ncc_error(means[0], means[1], scale, 5, seed=2)[0]
    far = co.gaussian_ncc_error(means[0], means[2], scale, 5, seed=3)[0]
    assert E[0, 1] == pytest.approx(near, abs=0.01) and E[1, 0] == pytest.approx(near, abs=0.01)
    assert E[0, 2] == pytest.approx(far, abs=0.005)
    two_way, se = co.fewshot_error(classes[:2], 2, 5, 200, 300, seed=4)
    assert (E[0, 1] + E[1, 0]) / 2 == pytest.approx(two_way, abs=4 * se + 0.005)


def test_rank_correlation_and_off_diagonal_against_hand_values():
    assert co.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert co.rank_correlation([1, 2, 3, 4], [4, 1, 0, -5]) == pytest.approx(-1.0)
    # ranks (1, 2, 3, 4) and (2, 1, 4, 3): Spearman 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 4 / 60
    assert co.rank_correlation([1, 2, 3, 4], [5, 1, 9, 7]) == pytest.approx(0.6)
    assert co.off_diagonal(np.arange(9).reshape(3, 3)).tolist() == [1, 2, 3, 5, 6, 7]


def test_linear_cka_is_one_under_rotation_and_scaling_and_small_for_independent_features():
    rng = np.random.default_rng(10)
    A = rng.normal(size=(500, 8))
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert co.linear_cka(A, 3 * A @ Q + 1.0) == pytest.approx(1.0)
    assert co.linear_cka(A, rng.normal(size=(500, 8))) < 0.05
    # one shared direction out of two equal-variance ones: CKA = 1 / 2 (closed form for this construction)
    A2 = rng.normal(size=(20_000, 2))
    B = np.c_[A2[:, 0], rng.normal(size=20_000)]
    assert co.linear_cka(A2, B) == pytest.approx(0.5, abs=0.02)


def test_contrastive_pair_trains_the_nscl_encoder_on_the_nscl_loss():
    """With one sample per class NSCL = DCL, so the two encoders must coincide (CKA 1); with many per class they
    must differ. The old train_contrastive had no NSCL mode."""
    population = ClassPopulation(seed=0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(64, 16))
    same = co.contrastive_pair(make, population, population.draw_classes(16, seed=1), steps=5, batch=16,
                               eval_every=5, seed=0)
    assert same["cka"] == pytest.approx(1.0, abs=1e-9)
    differ = co.contrastive_pair(make, population, population.draw_classes(2, seed=1), steps=30, batch=64,
                                 eval_every=10, seed=0)
    assert differ["cka"] < 1 - 1e-6
    with pytest.raises(ValueError, match="loss"):
        co.train_contrastive(make(), population, population.draw_classes(2), steps=1, batch=4, loss="scl")


def test_train_contrastive_reports_the_exact_finite_batch_equal_similarity_gap():
    """At C = 64 with 256 samples (4 per class) the equal-similarity gap is log(1 + 3/252), not the
    asymptotic log(64/63); the old history had no such entry and the chapter used the asymptote."""
    population = ClassPopulation(seed=0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(64, 8))
    history = co.train_contrastive(make(), population, population.draw_classes(64, seed=1), steps=1,
                                   batch=256, eval_every=1, seed=0)
    assert history[-1]["equal"] == pytest.approx(math.log1p(3 / 252), rel=1e-12)
    assert abs(history[-1]["equal"] - math.log(64 / 63)) > 0.003


def test_calibration_summary_on_hand_made_runs():
    """Two runs with values worked out by hand (new function: the chapter quoted these from memory)."""
    leaf = lambda *values: {"runs": list(values)}
    metrics = {"transfer.raw.accuracy": leaf(0.6, 0.7)}
    for ell, acc, nc1 in ((5, (0.65, 0.71), (0.4, 0.3)), (20, (0.9, 0.9), (0.3, 0.35)),
                          (100, (0.95, 0.96), (0.35, 0.2))):
        metrics[f"transfer.results.{ell}.accuracy"] = leaf(*acc)
        metrics[f"transfer.results.{ell}.NC1 trace"] = leaf(*nc1)
    for k, v in enumerate((1.9, 1.2, 1.1)):
        metrics[f"transfer.test_over_train[{k}]"] = leaf(v, 1.0)
    for d0 in (8, 32, 128):
        metrics |= {f"trained_two_layer.nc1.{d0}": leaf(0.05, 0.04),
                    f"trained_two_layer.init.{d0}": leaf(0.1, 0.08),
                    f"trained_two_layer.over_nngp.{d0}": leaf(0.5, 0.5)}
    out = co.calibration_summary({"metrics": metrics})
    assert out["cal_runs"] == 2 and out["cal_test_train_max"] == 1.9
    assert out["acc_margin_min"] == pytest.approx(0.01)
    assert out["nc1_low_at_20"] == 1  # run 0: 0.3 < 0.4, 0.35; run 1: 0.35 > 0.2
    assert out["init_over_nngp_min"] == pytest.approx(1.0) and out["init_over_nngp_max"] == pytest.approx(1.0)
    assert out["trained_over_init_max"] == pytest.approx(0.5)


def test_directional_table_without_the_paper_row():
    """The quoted paper row is optional (the old function required it)."""
    study = {"rows": [{"m": m, "T2": 1.0 / m, "error": 0.03} for m in (50, 100, 500)], "V": 1.4,
             "directional": 0.071, "T2 limit": 0.28, "exact": 0.0304}
    lines = co.directional_table({(0.8, 0.3): study}).splitlines()
    assert len(lines) == 2 and "paper" not in "".join(lines) and lines[1].endswith("0.030")


def test_two_layer_network_at_initialisation_matches_the_nngp_and_training_collapses():
    """Zero steps: hidden-feature NC1 of 4,000 random erf features ~ kernel NC1 of the NNGP (Monte Carlo);
    training on separable classes lowers it."""
    x, y = gaussian_two_class(64, 8, seed=0)
    start = co.train_two_layer(x, y, width=4000, steps=0)
    assert start["init"] == pytest.approx(co.kernel_nc1(co.nngp_kernel(x, "erf"), y), rel=0.05)
    trained = co.train_two_layer(x, y, width=256, steps=100, lr=1.0)
    assert trained["accuracy"] == 1.0 and trained["trained"] < trained["init"]


def test_tables_mark_measured_numbers_and_keep_quoted_ones_exact():
    row = {"target CDNV": 0.1234, "accuracy": 0.9, "T1": 0.5}
    table = co.transfer_table({5: row}, {"target CDNV": ".3f", "train CDNV": ".3f"})
    assert "≈0.123" in table and "nan" in table
    study = {"rows": [{"m": m, "T2": 1.0 / m, "error": 0.03} for m in (50, 100, 500)], "V": 1.4,
             "directional": 0.071, "T2 limit": 0.28, "exact": 0.0304}
    paper = {"V": 1.67, "directional": 0.073, "T2": {50: 0.94, 100: 0.57, 500: 0.29}, "T2 limit": 0.22,
             "error": "~0.05"}
    lines = co.directional_table({(0.8, 0.3): study}, paper).splitlines()
    assert lines[1].split()[-5:] == ["0.94", "0.57", "0.29", "0.22", "~0.05"]
    assert "0.94" in lines[1] and "≈" not in lines[1] and "≈0.02 " in lines[2] and lines[2].endswith("0.030")


# ----------------------------------------------------------------------------------------------
# The full profile's transfer experiment on image classes


def test_class_split_is_disjoint_complete_and_seeded():
    source, target = co.class_split(100, 20, seed=3)
    assert len(target) == 20 and len(source) == 80
    assert np.intersect1d(source, target).size == 0
    assert np.array_equal(np.union1d(source, target), np.arange(100))
    again, other = co.class_split(100, 20, seed=3), co.class_split(100, 20, seed=4)
    assert np.array_equal(again[1], target) and not np.array_equal(other[1], target)
    with pytest.raises(ValueError):
        co.class_split(10, 10)


def test_cifar_fs_split_holds_out_its_twenty_test_classes():
    names = co.CIFAR100_CLASSES
    assert len(set(names)) == 100 and list(names) == sorted(names)  # CIFAR-100's labels are alphabetical
    source, target = co.class_split(kind="cifar-fs")
    assert [names[k] for k in target] == sorted(co.CIFAR_FS_TEST) and len(source) == 80
    assert {2, 5, 99} <= set(target.tolist()) and np.intersect1d(source, target).size == 0
    with pytest.raises(ValueError):
        co.class_split(10, 2, kind="cifar-fs")


def test_split_by_classes_renumbers_and_pools_target_images():
    """Images carry their label as pixel value, so every row can be traced back to its class."""
    from theorylab.data import Split

    y_train, y_test = torch.arange(30) % 6, torch.arange(12) % 6
    image = lambda y: y.float()[:, None, None, None].expand(-1, 1, 2, 2).clone()
    data = Split(image(y_train), y_train, image(y_test), y_test)
    source_split, x, y = co.split_by_classes(data, [1, 4, 5], [0, 3])
    assert len(source_split.y_train) == 15 and len(source_split.y_test) == 6 and len(y) == 14
    original = source_split.x_train[:, 0, 0, 0].long()
    assert torch.equal(torch.tensor([1, 4, 5])[source_split.y_train], original)
    assert torch.equal(torch.tensor([0, 3])[y], x[:, 0, 0, 0].long())
    with pytest.raises(ValueError):
        co.split_by_classes(data, [1, 3], [3])


def test_usable_shots_keep_support_and_queries_disjoint():
    assert co.usable_shots([1, 5, 50, 100, 500], 600, 100) == ([1, 5, 50, 100, 500], 100)
    used, q = co.usable_shots([1, 5, 50], 9, 100)
    assert q == 4 and used == [1, 5, 5] and max(used) + q <= 9
    assert co.usable_shots([3], 2, 10) == ([1], 1)


def test_device_episodes_match_a_brute_force_loop_and_the_host_function():
    """Same draws as fewshot_error; the error recomputed with explicit Python loops over queries and centres."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 9)
    features = rng.normal(size=(54, 3)) + labels[:, None] * 0.7
    ways, shots, queries, episodes, seed = 3, 2, 4, 7, 11
    error, se = co.fewshot_error_device(torch.from_numpy(features), torch.from_numpy(labels), ways, shots,
                                        queries, episodes, seed=seed)
    draws, errors = np.random.default_rng(seed), []
    for _ in range(episodes):
        chosen = draws.choice(6, size=ways, replace=False)
        picks = [np.flatnonzero(labels == c)[draws.permutation(9)[: shots + queries]] for c in chosen]
        centres = [features[p[:shots]].mean(axis=0) for p in picks]
        wrong = 0
        for k, p in enumerate(picks):
            for row in p[shots:]:
                distance = [sum((features[row][t] - c[t]) ** 2 for t in range(3)) for c in centres]
                wrong += int(np.argmin(distance) != k)
        errors.append(wrong / (ways * queries))
    assert error == pytest.approx(np.mean(errors), abs=1e-12)
    assert se == pytest.approx(np.std(errors, ddof=1) / math.sqrt(episodes), abs=1e-12)
    per_class = [features[labels == c] for c in range(6)]
    assert (error, se) == pytest.approx(co.fewshot_error(per_class, ways, shots, queries, episodes, seed=seed))


def test_directional_bound_for_k_way_tasks_averages_the_pair_terms():
    """With ways = C the k-way form equals the C-way bound; in general it is (k-1)/(C-1) times it."""
    x, y = gaussian_classes([np.zeros(4), np.ones(4) * 3, -np.ones(4) * 3, np.arange(4.0)], 0.5, 300, seed=4)
    moments = co.class_moments(x, y)
    full = co.directional_bound_paper(moments, 20)
    assert co.directional_bound_paper(moments, 20, ways=4) == pytest.approx(full, rel=1e-12)
    assert co.directional_bound_paper(moments, 20, ways=2) == pytest.approx(full / 3, rel=1e-12)


def test_cifar_transfer_runs_on_a_toy_image_set_and_its_table_has_a_row_per_shot_count():
    """Ten classes of 32x32 noisy prototypes (classes with a single image are dropped); a width-2 ResNet-18
    for one epoch: the numbers mean nothing, the invariants hold."""
    from theorylab.data import Split

    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(10, 3, 32, 32))

    def draw(n):
        y = np.concatenate([rng.integers(0, 10, n - 1), [0]])
        y[y == 9] = 8
        y[-2] = 9  # class 9 has a single image
        return torch.tensor(prototypes[y] + rng.normal(size=(n, 3, 32, 32)), dtype=torch.float32), torch.from_numpy(y)

    data = Split(*draw(120), *draw(40))
    result = co.cifar_transfer(data, epochs=1, width=2, split="random", n_target=4, shots=(1, 5, 50), queries=100,
                               episodes=3, batch=32, seed=1)
    assert [r["m"] for r in result["rows"]] == [1, 5, 50]
    assert all(r["m used"] + result["queries"] <= result["smallest class"] for r in result["rows"])
    assert result["V"] == pytest.approx(2 * result["CDNV"]) and result["ways"] <= 5
    assert all(0 <= r["error"] <= 1 and r["T1"] > 0 for r in result["rows"])
    lines = co.fewshot_table(result).splitlines()
    assert len(lines) == 1 + 3 + 2 and lines[-2].lstrip().startswith("inf")
