"""Unit tests of theorylab.alignment against independent oracles: NumPy's moments and correlations,
constructed layers whose alignments are known, autograd on single samples, and brute-force enumeration of
every SGD batch (T1)."""
import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from theorylab import alignment as al
from theorylab import data, training


def small_model(seed=0, widths=(6, 5, 4, 3)):
    torch.manual_seed(seed)
    return training.mlp(list(widths)).double()


def small_data(n=5, seed=1, dim=6, classes=3):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, dim, generator=generator, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=generator))


def constructed_stats(h_a, g_b, weight, bias=None):
    """Statistics of a layer given its inputs and output gradients, with the exact linear relations."""
    bias = np.zeros(weight.shape[0]) if bias is None else bias
    return al.LayerStatistics(h_a, h_a @ weight.T + bias, g_b @ weight, g_b, weight, 0)


def test_alignment_is_the_pearson_correlation_of_the_entries_and_the_cosine_without_centring():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 7)), rng.normal(size=(7, 7))
    assert al.alignment(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)
    cosine = np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b)
    assert al.alignment(a, b, centre_entries=False) == pytest.approx(cosine, abs=1e-12)
    assert al.alignment(a, 3.0 * a + 2.0) == pytest.approx(1.0)
    assert al.alignment(a, -a) == pytest.approx(-1.0)
    assert al.alignment(2.5 * a, b) == pytest.approx(al.alignment(a, b))


@pytest.mark.parametrize("call, message", [
    (lambda: al.alignment(np.eye(3), np.eye(4)), "one shape"),
    (lambda: al.alignment(np.ones((3, 3)), np.eye(3)), "constant"),
    (lambda: al.second_moment(np.ones((4, 3)), "whitened"), "mode"),
    (lambda: al.second_moment(np.ones(4), "raw"), "samples, features"),
])
def test_bad_matrices_and_modes_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_second_moments_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)) + 3.0
    assert np.allclose(al.second_moment(x, "raw"), x.T @ x / 50)
    assert np.allclose(al.second_moment(x, "centred"), np.cov(x.T, bias=True))
    units = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(al.second_moment(x, "normalised"), np.cov(units.T, bias=True))
    scaled = x * rng.uniform(0.1, 10.0, size=(50, 1))  # normalising forgets each row's length
    assert np.allclose(al.second_moment(scaled, "normalised"), al.second_moment(x, "normalised"))


def test_all_six_alignments_are_one_for_an_isotropic_layer():
    # W has orthonormal rows times 2: Z_b = 4I and every moment below is a multiple of Z.
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(6, 4)))
    weight = 2.0 * q.T
    stats = constructed_stats(h_a=weight.copy(), g_b=np.eye(4), weight=weight)  # raw H_a = G_a = Z_a / 4
    alignments = al.crh_alignments(stats, mode="raw")
    assert alignments == pytest.approx(dict.fromkeys(al.RELATIONS, 1.0), abs=1e-12)


def test_alignments_equal_their_closed_forms_on_a_generic_layer():
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(4, 6))
    z_a, z_b = weight.T @ weight, weight @ weight.T
    stats = constructed_stats(h_a=weight.copy(), g_b=np.eye(4), weight=weight)
    values = al.crh_alignments(stats, mode="raw")
    assert values["a-RWA"] == pytest.approx(1.0) and values["a-GWA"] == pytest.approx(1.0)
    # raw H_b = W W^T W W^T / 4 = Z_b^2 / 4 and raw G_b = I / 4
    assert values["b-RWA"] == pytest.approx(al.alignment(z_b @ z_b, z_b))
    assert values["b-GWA"] == pytest.approx(al.alignment(np.eye(4), z_b))
    assert values["b-RGA"] == pytest.approx(al.alignment(z_b @ z_b, np.eye(4)))
    assert z_a.shape == (6, 6)


def test_rotation_null_keeps_the_spectrum_and_is_one_for_isotropic_matrices():
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 4)))
    weight = 2.0 * q.T
    stats = constructed_stats(h_a=weight.copy(), g_b=np.eye(4), weight=weight)
    nulls = al.null_alignments(stats, "rotation", draws=5, seed=0, mode="raw")
    assert np.allclose(nulls["b-RGA"], 1.0)  # Q I Q^T = I
    rng = np.random.default_rng(5)
    rotation = al.haar_orthogonal(5, rng)
    assert np.allclose(rotation @ rotation.T, np.eye(5))
    sym = rng.normal(size=(5, 5))
    sym = sym + sym.T
    assert np.allclose(np.linalg.eigvalsh(rotation @ sym @ rotation.T), np.linalg.eigvalsh(sym))


def test_nulls_are_reproducible_and_small_for_a_rank_one_layer():
    rng = np.random.default_rng(6)
    weight = rng.normal(size=(30, 30))
    stats = constructed_stats(rng.normal(size=(400, 30)), rng.normal(size=(400, 30)), weight)
    first = al.null_alignments(stats, "gaussian", draws=10, seed=3)
    again = al.null_alignments(stats, "gaussian", draws=10, seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in al.RELATIONS)
    assert set(first) == set(al.RELATIONS) and all(v.shape == (10,) for v in first.values())
    # a random rank-one layer: its rotated Grams share no direction with the data, so the nulls are small
    rank_one = np.outer(rng.normal(size=30), rng.normal(size=30))
    spiked = constructed_stats(rng.normal(size=(400, 30)) @ rank_one.T, rng.normal(size=(400, 30)), rank_one)
    rotation = al.null_alignments(spiked, "rotation", draws=10, seed=3, mode="raw")
    assert max(np.abs(rotation[k]).max() for k in ("a-RWA", "b-RWA")) < 0.3
    with pytest.raises(ValueError, match="kind"):
        al.null_alignments(stats, "shuffle")
    with pytest.raises(ValueError, match="draws"):
        al.null_alignments(stats, "gaussian", draws=0)


def test_layer_statistics_are_the_exact_per_sample_gradients():
    model = small_model()
    x, y = small_data(n=7)
    stats = al.layer_statistics(model, x, y, layer=1)
    linear = al.linear_layers(model)[1]
    w = linear.weight.detach().numpy()
    assert np.allclose(stats.g_a, stats.g_b @ w, atol=1e-13)  # g_a = W^T g_b, row by row
    assert np.allclose(stats.h_b, stats.h_a @ w.T + linear.bias.detach().numpy(), atol=1e-13)
    for i in range(7):  # oracle: autograd of sample i's own loss with respect to the layer's output
        store: dict = {}
        handle = linear.register_forward_hook(lambda _m, _a, out, store=store: store.setdefault("out", out))
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        handle.remove()
        (grad,) = torch.autograd.grad(loss, store["out"])
        assert np.allclose(stats.g_b[i], -grad[0].numpy(), atol=1e-13)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # mode restored
    assert al.layer_statistics(model, x, y, layer=-1).layer == 2


@pytest.mark.parametrize("layer, message", [(3, "index of the model's 3 linear"), (-4, "linear layers"),
                                            (1.0, "layer"), (True, "layer")])
def test_bad_layers_are_refused(layer, message):
    x, y = small_data()
    with pytest.raises(ValueError, match=message):
        al.layer_statistics(small_model(), x, y, layer)


def test_models_and_shapes_without_what_is_needed_are_refused():
    x, y = small_data()
    with pytest.raises(ValueError, match="no nn.Linear"):
        al.layer_statistics(nn.Sequential(nn.ReLU()), x, y, 0)
    with pytest.raises(ValueError, match="same number of rows"):
        al.layer_statistics(small_model(), x, y[:3], 0)
    shared = nn.Linear(6, 6).double()
    with pytest.raises(ValueError, match="ran 2 times"):
        al.layer_statistics(nn.Sequential(shared, nn.ReLU(), shared), x, y, 0)
    with pytest.raises(RuntimeError):  # a width mismatch is torch's own error, raised before any statistic
        al.layer_statistics(small_model(), torch.zeros(5, 9, dtype=torch.float64), y, 0)


def brute_force_expected_change(model, x, y, layer, lr, wd, batch):
    """Mean of Z's change over every ordered batch of ``batch`` indices, each one a real torch SGD step."""
    changes = {"a": [], "b": []}
    for index in itertools.product(range(len(y)), repeat=batch):
        copy_ = copy.deepcopy(model)
        weight = al.linear_layers(copy_)[layer].weight
        before = weight.detach().clone()
        optimizer = torch.optim.SGD(copy_.parameters(), lr=lr, weight_decay=wd)
        loss = nn.functional.cross_entropy(copy_(x[list(index)]), y[list(index)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        after = weight.detach()
        changes["a"].append((after.T @ after - before.T @ before).numpy())
        changes["b"].append((after @ after.T - before @ before.T).numpy())
    return {side: np.mean(values, axis=0) for side, values in changes.items()}


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_t1_drift_equals_the_mean_over_every_batch_of_real_sgd_steps(layer):
    model = small_model(seed=layer)
    x, y = small_data(n=5, seed=layer + 10)
    lr, wd, batch = 0.3, 0.05, 2
    expected = al.expected_drift_terms(al.layer_statistics(model, x, y, layer), lr, wd, batch)
    brute = brute_force_expected_change(model, x, y, layer, lr, wd, batch)
    for side in "ab":
        assert np.max(np.abs(expected[side].total - brute[side])) < 1e-10


def test_t1_full_batch_is_one_gradient_descent_step_with_no_noise_term():
    model = small_model(seed=4)
    x, y = small_data(n=6, seed=4)
    stats = al.layer_statistics(model, x, y, 1)
    terms = al.expected_drift_terms(stats, lr=0.2, wd=0.1, batch=None)
    gd = copy.deepcopy(model)
    weight = al.linear_layers(gd)[1].weight
    before = weight.detach().clone()
    result = training.train_sgd(gd, data.Split(x, y, x[:0], y[:0]), batch=None, lr=0.2, wd=0.1, steps=1)
    after = weight.detach()
    assert result.steps == 1
    assert np.max(np.abs(terms["a"].total - (after.T @ after - before.T @ before).numpy())) < 1e-12
    assert np.max(np.abs(terms["b"].total - (after @ after.T - before @ before.T).numpy())) < 1e-12
    assert not terms["a"].noise.any() and not terms["b"].noise.any()


def test_t1_terms_have_their_stated_forms():
    rng = np.random.default_rng(7)
    weight, h_a, g_b = rng.normal(size=(3, 4)), rng.normal(size=(9, 4)), rng.normal(size=(9, 3))
    stats = constructed_stats(h_a, g_b, weight)
    lr, wd, batch = 0.1, 0.2, 4
    terms = al.expected_drift_terms(stats, lr, wd, batch)["a"]
    m = sum(np.outer(g, h) for g, h in zip(g_b, h_a, strict=True)) / 9
    assert np.allclose(terms.decay, -lr * (2 * wd - lr * wd ** 2) * weight.T @ weight)
    assert np.allclose(terms.cross, lr * (1 - lr * wd) * (weight.T @ m + m.T @ weight))
    assert np.allclose(terms.noise, lr ** 2 / batch * sum(g @ g * np.outer(h, h) for g, h in zip(g_b, h_a, strict=True)) / 9)
    assert np.allclose(terms.drift, lr ** 2 * (1 - 1 / batch) * m.T @ m)
    assert sum(terms.relative_sizes().values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="batch"):
        al.expected_drift_terms(stats, lr, wd, 0)
    with pytest.raises(ValueError, match="lr"):
        al.expected_drift_terms(stats, -1.0, wd, 2)


def test_t2_propagation_is_exact_for_an_exact_linear_layer():
    rng = np.random.default_rng(8)
    weight = rng.normal(size=(5, 7))
    h_a = rng.normal(size=(300, 7)) @ rng.normal(size=(7, 7))
    stats = constructed_stats(h_a, rng.normal(size=(300, 5)), weight, bias=rng.normal(size=5))
    residuals = al.propagation_residuals(stats)
    assert residuals.representation < 1e-12 and residuals.gradient < 1e-12
    assert residuals.slope_difference == pytest.approx(1.0, abs=1e-9)
    assert residuals.points == 5


def test_eigen_profile_of_a_matrix_power_is_the_power_of_the_eigenvalues():
    rng = np.random.default_rng(9)
    w = rng.normal(size=(6, 6))
    z = w.T @ w
    lam, forms = al.eigen_profile(np.linalg.matrix_power(z, 2), z)
    assert np.all(np.diff(lam) <= 0)
    assert np.allclose(forms, lam ** 2)


def test_pah_exponent_recovers_a_planted_power_law_inside_its_interval():
    rng = np.random.default_rng(10)
    weight = rng.normal(size=(8, 8)) @ np.diag(np.geomspace(1.0, 0.05, 8))
    lam, vectors = np.linalg.eigh(weight.T @ weight)
    root = vectors @ np.diag(lam ** 1.0) @ vectors.T  # H_a = Z_a^2 (covariance of h_a = root^2)
    h_a = rng.normal(size=(20_000, 8)) @ root
    stats = constructed_stats(h_a, rng.normal(size=(20_000, 8)), weight)
    fit = al.pah_exponent(stats, "a", boots=50, seed=0, min_points=8)
    assert fit.low <= 2.0 <= fit.high and fit.high - fit.low < 0.1
    assert fit.r2 > 0.999 and fit.off_diagonal < 0.05
    output = al.pah_exponent(stats, "b", boots=50, seed=0, min_points=8)  # T2: H_b = Z_b^3
    assert output.low <= 3.0 <= output.high
    assert al.pah_exponent(stats, "a", boots=50, seed=0, min_points=8) == fit  # same seed, same interval
    with pytest.raises(ValueError, match="side"):
        al.pah_exponent(stats, "c")
    with pytest.raises(ValueError, match="matrix"):
        al.pah_exponent(stats, "a", matrix="Z")


def test_full_batch_training_and_tanh_networks():
    model = training.mlp([4, 3, 2], activation="tanh")
    assert isinstance(model[1], nn.Tanh)
    with pytest.raises(ValueError, match="activation"):
        training.mlp([4, 3, 2], activation="gelu")
    with pytest.raises(ValueError, match="batch"):
        training.train_sgd(model, data.Split(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long),
                                             torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
                           batch=2.0, lr=0.1, wd=0.0, steps=1)


def test_digits_in_the_unit_interval_with_every_sample():
    split = data.digits(1797, standardize=False, unit_interval=True)
    assert split.x_train.shape == (1797, 64) and split.x_test.shape == (0, 64)
    assert float(split.x_train.min()) == 0.0 and float(split.x_train.max()) == 1.0
    with pytest.raises(ValueError, match="exclude"):
        data.digits(unit_interval=True)
    with pytest.raises(ValueError, match="n_train"):
        data.digits(1798)


def test_run_alignment_logs_every_k_steps_and_averages_the_drift():
    split = data.digits(200, standardize=False, unit_interval=True)
    run = al.run_alignment(split, widths=[64, 16, 16, 10], lr=0.05, wd=1e-3, batch=8, steps=60, layer=1,
                           log_every=20, drift_from=40, drift_every=10)
    assert [entry["step"] for entry in run.history] == [0, 20, 40, 60]
    assert set(run.history[-1]["alignments"]) == set(al.RELATIONS)
    final = al.layer_statistics(run.model, split.x_train, split.y_train, 1)
    assert run.history[-1]["alignments"] == al.crh_alignments(final)
    assert run.mean_drift["a"].decay.shape == (16, 16) and run.mean_drift["b"].noise.shape == (16, 16)
    again = al.run_alignment(split, widths=[64, 16, 16, 10], lr=0.05, wd=1e-3, batch=8, steps=60, layer=1,
                             log_every=20)
    assert again.mean_drift is None and again.history[-1]["alignments"] == run.history[-1]["alignments"]
    assert run.mean_alignment(20) == pytest.approx(np.mean(list(run.history[1]["alignments"].values())))
    with pytest.raises(ValueError, match="divide"):
        al.run_alignment(split, widths=[64, 10], lr=0.1, wd=0.0, batch=8, steps=10, layer=0, log_every=5,
                         drift_from=0, drift_every=3)
    with pytest.raises(ValueError, match="layer"):
        al.run_alignment(split, widths=[64, 10], lr=0.1, wd=0.0, batch=8, steps=10, layer=1, log_every=5)


def test_gaussian_mixture_has_balanced_labels_and_the_stated_scales():
    split = data.gaussian_mixture(20_000, 64, 10, separation=2.0, seed=0)
    assert split.x_train.shape == (20_000, 64) and split.x_test.shape == (0, 64)
    assert np.bincount(split.y_train.numpy()).tolist() == [2000] * 10
    x, y = split.x_train.double().numpy(), split.y_train.numpy()
    means = np.array([x[y == k].mean(axis=0) for k in range(10)])
    noise = x - means[y]
    assert np.mean(np.sum(noise ** 2, axis=1)) == pytest.approx(1.0, rel=0.02)  # unit total noise variance
    assert np.mean(np.linalg.norm(means, axis=1)) == pytest.approx(2.0, rel=0.2)
    assert np.array_equal(data.gaussian_mixture(50, 4, 3, seed=1).x_train, data.gaussian_mixture(50, 4, 3, seed=1).x_train)
    with pytest.raises(ValueError, match="n_classes"):
        data.gaussian_mixture(10, 4, 1)


def test_small_cnn_with_a_two_layer_head_is_measured_at_its_fully_connected_layers():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    torch.manual_seed(0)
    default = training.small_cnn(8)  # the rank chapter's network: same modules, same initialisation
    assert all(torch.equal(p, q) for p, q in zip(default.parameters(), reference.parameters(), strict=True))
    model = training.small_cnn(8, n_classes=3, head=(6,)).double()
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(10) % 3
    penultimate = al.layer_statistics(model, x, y, 0)
    assert penultimate.weight.shape == (6, 8) and penultimate.h_a.shape == (10, 8)
    assert np.allclose(penultimate.g_a, penultimate.g_b @ penultimate.weight)


def test_sequence_models_give_one_row_per_position():
    from theorylab import tinylm

    torch.manual_seed(0)
    model = tinylm.TinyTransformer(vocab=7, width=8, layers=1, heads=2, max_len=16).double()
    tokens = torch.randint(0, 7, (4, 9))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    linear1 = model.blocks.layers[0].linear1
    index = al.linear_layers(model).index(linear1)
    stats = al.layer_statistics(model, inputs, targets, index)
    assert stats.rows_per_sample == 8 and stats.h_a.shape == (32, 8) and stats.g_b.shape == (32, 32)
    assert np.allclose(stats.g_a, stats.g_b @ stats.weight, atol=1e-12)
    store: dict = {}
    handle = linear1.register_forward_hook(lambda _m, _a, out: store.setdefault("out", out))
    model.eval()
    loss = nn.functional.cross_entropy(model(inputs[1:2]).reshape(-1, 7), targets[1:2].reshape(-1), reduction="sum")
    handle.remove()
    model.train()
    (grad,) = torch.autograd.grad(loss, store["out"])  # sample 1's own loss, at each of its positions
    assert np.allclose(stats.g_b[8:16], -grad[0].numpy(), atol=1e-12)
    assert al.propagation_residuals(stats).representation < 1e-12
    assert np.array_equal(stats.sample_rows(np.array([2, 0])), np.r_[16:24, 0:8])
    with pytest.raises(ValueError, match="one row per sample"):
        al.expected_drift_terms(stats, 0.1, 0.0, 2)
    fit = al.pah_exponent(stats, "a", boots=20, min_points=4)
    assert fit.low <= fit.slope <= fit.high
    attention_output = model.blocks.layers[0].self_attn.out_proj  # used through its weight, never called
    with pytest.raises(ValueError, match="ran 0 times"):
        al.layer_statistics(model, inputs, targets, al.linear_layers(model).index(attention_output))
    with pytest.raises(ValueError, match="class dimension"):
        al.layer_statistics(model, inputs, targets[:, :3], index)


def test_realized_drift_is_the_mean_change_of_the_grams_and_a_given_model_trains():
    split = data.digits(200, standardize=False, unit_interval=True)
    torch.manual_seed(1)
    model = training.mlp([64, 12, 10])
    run = al.run_alignment(split, model=model, lr=0.05, wd=1e-3, batch=8, steps=40, layer=0, log_every=20,
                           drift_from=20, drift_every=10)
    assert run.model is model
    first = run.history[1]  # step 20
    assert first["step"] == 20
    weight = model[0].weight.detach().double().numpy()
    z_end = weight.T @ weight
    assert run.realized_drift["a"].shape == (64, 64)
    torch.manual_seed(1)
    shorter = al.run_alignment(split, model=training.mlp([64, 12, 10]), lr=0.05, wd=1e-3, batch=8, steps=20,
                               layer=0, log_every=20)  # the same first 20 steps (same seed, same batches)
    w_20 = shorter.model[0].weight.detach().double().numpy()
    assert np.allclose(z_end - 20 * run.realized_drift["a"], w_20.T @ w_20, atol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        al.run_alignment(split, widths=[64, 10], model=model, lr=0.1, wd=0.0, batch=8, steps=10, layer=0,
                         log_every=5)


def balanced_stats(rng, n=5, d_a=3, d_b=2, wd=0.2):
    """A layer whose full gradient balances the decay exactly, M = wd W: g_b = n wd h_a (h_a^T h_a)^-1 W^T."""
    weight, h_a = rng.normal(size=(d_b, d_a)), rng.normal(size=(n, d_a))
    g_b = n * wd * h_a @ np.linalg.inv(h_a.T @ h_a) @ weight.T
    return constructed_stats(h_a, g_b, weight)


def test_at_balance_the_expected_drift_of_every_batch_is_noise_minus_decay_squared():
    rng, wd, lr = np.random.default_rng(21), 0.2, 0.3
    stats = balanced_stats(rng, wd=wd)
    w, h_a, g_b = stats.weight, stats.h_a, stats.g_b
    assert np.allclose(g_b.T @ h_a / 5, wd * w)
    enumerated = {"a": np.zeros((3, 3)), "b": np.zeros((2, 2))}
    for rows in itertools.product(range(5), repeat=2):  # every ordered batch of B = 2, by brute force
        step = (1 - lr * wd) * w + lr * np.mean([np.outer(g_b[i], h_a[i]) for i in rows], axis=0)
        enumerated["a"] += (step.T @ step - w.T @ w) / 25
        enumerated["b"] += (step @ step.T - w @ w.T) / 25
    noise = {"a": np.mean([np.sum(g ** 2) * np.outer(h, h) for h, g in zip(h_a, g_b, strict=True)], axis=0),
             "b": np.mean([np.sum(h ** 2) * np.outer(g, g) for h, g in zip(h_a, g_b, strict=True)], axis=0)}
    for side, z in (("a", stats.z_a), ("b", stats.z_b)):
        assert np.allclose(enumerated[side], lr ** 2 / 2 * (noise[side] - wd ** 2 * z), atol=1e-12)
    checks = al.stationary_prediction(stats, wd)
    for side, z in (("a", stats.z_a), ("b", stats.z_b)):
        predicted = noise[side] / wd ** 2
        assert checks[side].balance < 1e-12
        assert np.isclose(checks[side].scale, np.trace(predicted) / np.trace(z))
        assert np.isclose(checks[side].alignment, np.corrcoef(z.ravel(), predicted.ravel())[0, 1])
    with pytest.raises(ValueError, match="positive weight decay"):
        al.stationary_prediction(stats, 0.0)


def test_stationary_prediction_is_exact_for_a_layer_at_its_predicted_weights():
    rng, wd = np.random.default_rng(22), 0.5
    h_a = rng.normal(size=(400, 3))
    weight = np.diag([1.0, 0.5, 0.2])
    g_b = 400 * wd * h_a @ np.linalg.inv(h_a.T @ h_a) @ weight.T  # M = gamma W exactly
    stats = constructed_stats(h_a, g_b, weight)
    assert al.stationary_prediction(stats, wd)["a"].balance < 1e-12
    unbalanced = constructed_stats(h_a, 2 * g_b, weight)
    assert np.isclose(al.stationary_prediction(unbalanced, wd)["a"].balance, 1.0)
    # A rank-one layer W = w u v^T at balance AND at Z = P: h_i = s_i v, g_i = t_i u with
    # s_i t_i = gamma w for every sample gives M = gamma W and P_a = gamma^-2 E[s^2 t^2] v v^T = Z_a.
    u, v = rng.normal(size=4), rng.normal(size=3)
    u, v, w = u / np.linalg.norm(u), v / np.linalg.norm(v), 1.7
    s = rng.uniform(0.5, 2.0, size=50)
    at_p = constructed_stats(s[:, None] * v, (wd * w / s)[:, None] * u, w * np.outer(u, v))
    check = al.stationary_prediction(at_p, wd)
    assert check["a"].balance < 1e-12
    for side in ("a", "b"):  # and P_b = gamma^-2 E[s^2 t^2] u u^T = Z_b
        assert check[side].alignment == pytest.approx(1.0)
        assert check[side].scale == pytest.approx(1.0)
    off = constructed_stats(s[:, None] * v, (wd * w / s ** 0.5)[:, None] * u, w * np.outer(u, v))
    assert not al.stationary_prediction(off, wd)["a"].scale == pytest.approx(1.0)


def test_off_diagonal_mass_is_zero_for_a_power_and_the_off_diagonal_share_otherwise():
    rng = np.random.default_rng(23)
    w = rng.normal(size=(5, 5))
    z = w.T @ w
    lam, vectors = np.linalg.eigh(z)
    assert al.off_diagonal_mass(np.linalg.matrix_power(z, 3), z) < 1e-10
    inner = np.diag(lam[::-1] ** 2)
    inner[0, 1] = inner[1, 0] = 0.5 * lam[-1] ** 2  # same diagonal, one symmetric off-diagonal pair
    moment = vectors[:, ::-1] @ inner @ vectors[:, ::-1].T
    expected = np.sqrt(2) * 0.5 * lam[-1] ** 2 / np.linalg.norm(inner)
    assert np.isclose(al.off_diagonal_mass(moment, z), expected)
    assert al.off_diagonal_mass(moment, z, keep=np.array([False, False, True, True, True])) < 1e-10
    with pytest.raises(ValueError, match="square matrices"):
        al.off_diagonal_mass(moment, z[:4, :4])


def test_pah_refuses_a_fit_through_too_few_directions_and_reports_its_goodness():
    rng = np.random.default_rng(24)
    weight = rng.normal(size=(8, 8)) @ np.diag(np.geomspace(1.0, 0.05, 8))
    stats = constructed_stats(rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8)), weight)
    with pytest.raises(ValueError, match="only 8 eigen-directions"):
        al.pah_exponent(stats, "a", boots=5)  # the default asks for 10
    with pytest.raises(ValueError, match="min_points"):
        al.pah_exponent(stats, "a", boots=5, min_points=1)
    fit = al.pah_exponent(stats, "a", boots=5, min_points=8)  # isotropic H: slope near 0, poor fit
    assert abs(fit.slope) < 0.1 and fit.r2 < 0.9
    assert fit.residual_max >= fit.residual_rms > 0


def test_enumerated_drift_is_the_t1_formula_and_refuses_huge_enumerations():
    rng = np.random.default_rng(25)
    stats = constructed_stats(rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), rng.normal(size=(2, 3)))
    brute = al.enumerated_drift(stats, 0.3, 0.1, batch=3)
    formula = al.expected_drift_terms(stats, 0.3, 0.1, batch=3)
    for side in "ab":
        assert np.allclose(brute[side], formula[side].total, atol=1e-12)
    with pytest.raises(ValueError, match="10,000"):
        al.enumerated_drift(stats, 0.3, 0.1, batch=7)


def test_worst_propagation_is_rounding_on_a_double_network_and_diagnostics_need_a_drift():
    x, y = small_data(n=40)
    model = small_model()
    worst = al.worst_propagation(model, x, y, [0, 1, 2])
    assert worst["representation"] < 1e-12 and worst["gradient"] < 1e-12 and worst["slope"] < 1e-9
    run = al.AlignmentRun(model, 0, [], None)
    with pytest.raises(ValueError, match="drift_from"):
        al.drift_diagnostics(run, al.layer_statistics(model, x, y, 0))


def test_directions_above_counts_eigenvalues_over_the_floor():
    rotation = al.haar_orthogonal(5, np.random.default_rng(26))
    gram = rotation @ np.diag([1.0, 0.5, 2e-4, 5e-5, 0.0]) @ rotation.T
    assert al.directions_above(gram) == 3 and al.directions_above(gram, 1e-3) == 2
    with pytest.raises(ValueError, match="floor"):
        al.directions_above(gram, 0.0)


def test_an_in_place_activation_after_the_layer_does_not_overwrite_its_outputs():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    in_place = copy.deepcopy(plain)
    in_place[1] = nn.ReLU(inplace=True)
    x, y = small_data(n=9, dim=4)
    reference = al.layer_statistics(plain, x, y, 0)
    stats = al.layer_statistics(in_place, x, y, 0)
    assert (reference.h_b < 0).any()  # pre-activations, which an in-place ReLU would have clipped
    weight, bias = plain[0].weight.detach().numpy(), plain[0].bias.detach().numpy()
    assert np.allclose(stats.h_b, stats.h_a @ weight.T + bias, atol=1e-12)
    for name in ("h_a", "h_b", "g_a", "g_b"):
        assert np.allclose(getattr(stats, name), getattr(reference, name), atol=1e-12)


def test_head_statistics_are_the_whole_networks_statistics_of_the_head_layers():
    from theorylab import models

    torch.manual_seed(0)
    model = models.resnet18(5, 3, width=2, head=(16,)).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 8, 8, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 5, (12,), generator=generator)
    model.train()  # eval mode is the measurement's; the training mode must come back
    for head_index, model_index in ((0, -2), (1, -1)):
        by_head = al.head_statistics(model, x, y, head_index, chunk=5)
        whole = al.layer_statistics(model, x, y, model_index)
        for name in ("h_a", "h_b", "g_a", "g_b", "weight"):
            assert np.allclose(getattr(by_head, name), getattr(whole, name), atol=1e-10)
    assert model.training
    assert al.head_inputs(model, x).shape == (12, 16)
    with pytest.raises(ValueError, match="features"):
        al.head_inputs(nn.Linear(3, 2), x)


def toy_images(n_train=40, n_test=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return data.Split(torch.randn(n_train, 3, 8, 8, generator=generator),
                      torch.arange(n_train) % 4,
                      torch.randn(n_test, 3, 8, 8, generator=generator), torch.arange(n_test) % 4)


def test_resnet_alignment_measures_both_head_layers_every_few_epochs():
    split = toy_images()
    run = al.resnet_alignment(split, lr=0.05, wd=5e-4, batch=16, epochs=2, width=2, record_every=1,
                              measure=24, null_draws=3)
    assert run.steps == 2 * 3  # ceil(40 / 16) batches per epoch
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert run.history[-1]["alignments"] == run.final  # the last record is the final model's
    for by_layer in (run.final, run.final_centred):
        assert set(by_layer) == {"penultimate", "output"}
        for six in by_layer.values():
            assert list(six) == list(al.RELATIONS)
            assert all(-1 - 1e-9 <= v <= 1 + 1e-9 for v in six.values())
    assert set(run.largest_null) == {"penultimate", "output"}
    assert 0 <= run.test_accuracy <= 1
    assert run.mean_alignment("output") == pytest.approx(np.mean(list(run.final["output"].values())))
    again = al.resnet_alignment(split, lr=0.05, wd=5e-4, batch=16, epochs=2, width=2, record_every=1,
                                measure=24)
    assert again.final == run.final and again.largest_null == {}  # seeded: the same run
    with pytest.raises(ValueError, match="null_draws"):
        al.resnet_alignment(split, lr=0.05, wd=0.0, batch=16, epochs=1, width=2, null_draws=-1)
