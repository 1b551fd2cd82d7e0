"""theorylab.rank on constructed matrices with known spectra, and the certificate on a real SGD run."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from theorylab import data, rank, training

torch.set_num_threads(1)


def with_spectrum(values, shape=(8, 6), seed=0):
    """U diag(values) V^T with random orthogonal U, V: a matrix whose singular values we know."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[1])))
    s = np.zeros(shape)
    s[: len(values), : len(values)] = np.diag(values)
    return u @ s @ v.T


def test_singular_values_of_a_constructed_matrix():
    np.testing.assert_allclose(rank.singular_values(with_spectrum([5, 3, 1, 0.1])), [5, 3, 1, 0.1, 0, 0], atol=1e-12)


def test_count_tail_and_stable_rank_match_hand_computation():
    w = with_spectrum([3.0, 2.0, 1.0, 0.5])  # ||W||_F^2 = 14.25
    norm = math.sqrt(14.25)
    assert rank.count_rank(w, 0.9 / norm) == 3 and rank.count_rank(w, 0.4 / norm) == 4
    # tail beyond rank 2 has mass 1.25: within eps iff eps^2 * 14.25 >= 1.25
    assert rank.tail_rank(w, math.sqrt(1.25 / 14.25) + 1e-9) == 2
    assert rank.tail_rank(w, math.sqrt(1.25 / 14.25) - 1e-9) == 3
    assert rank.stable_rank(w) == pytest.approx(14.25 / 9.0)


def test_tail_rank_is_the_eckart_young_distance_by_brute_force():
    w = np.random.default_rng(3).normal(size=(7, 5))
    u, s, vt = np.linalg.svd(w)
    for eps in (0.05, 0.3, 0.7):
        distances = [np.linalg.norm(w - (u[:, :r] * s[:r]) @ vt[:r]) / np.linalg.norm(w) for r in range(6)]
        assert rank.tail_rank(w, eps) == next(r for r, d in enumerate(distances) if d <= eps + 1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_count_rank_never_exceeds_tail_rank(seed):
    w = np.random.default_rng(seed).normal(size=(20, 12)) @ np.diag(np.geomspace(1, 1e-4, 12))
    for eps in (1e-3, 1e-2, 0.1, 0.5):
        assert rank.count_rank(w, eps) <= rank.tail_rank(w, eps)


def test_convolution_kernels_are_reshaped_to_out_by_in_k_squared():
    kernel = torch.randn(4, 3, 3, 3)
    assert rank.conv_kernel_matrix(kernel).shape == (4, 27)
    np.testing.assert_allclose(rank.singular_values(kernel), np.linalg.svd(kernel.reshape(4, 27).numpy(), compute_uv=False),
                               rtol=1e-5)


def test_window_and_bound_match_closed_forms():
    n = rank.steps_for_rank(eps=0.2, kappa=1.0, lr=0.05, wd=0.1)
    assert n == 322 and (1 - 0.005) ** n <= 0.2 < (1 - 0.005) ** (n - 1)
    bound = rank.rank_bound(batch=16, uses=1, lr=0.1, wd=5e-3, eps=1e-3, kappa=2.0)
    assert bound == 16 * math.ceil(math.log(2000) / -math.log(1 - 5e-4))
    assert bound <= 16 * math.ceil(math.log(2000) / 5e-4)  # -log(1-x) >= x
    assert rank.decay_factor([0.1] * 10, 0.5) == pytest.approx(0.95**10)


@pytest.mark.parametrize("call,message", [
    (lambda: rank.count_rank(np.eye(3), 0.0), "eps"),
    (lambda: rank.tail_rank(np.eye(3), 1.5), "eps"),
    (lambda: rank.steps_for_rank(0.1, 2.0, 0.1, 0.0), "without weight decay"),
    (lambda: rank.rank_bound(0, 1, 0.1, 0.1, 0.1, 2.0), "batch"),
    (lambda: rank.singular_values(np.ones(3)), "expected a matrix"),
    (lambda: rank.conv_kernel_matrix(torch.ones(2, 2)), "4-d"),
    (lambda: training.mlp([10]), "widths"),
    (lambda: training.steps_for_epochs(100, 0, 1), "positive"),
    (lambda: data.digits(n_train=0), "n_train"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_certificate_and_unrolling_on_a_real_sgd_run():
    split = data.digits(n_train=300, seed=1)
    torch.manual_seed(0)
    model = training.mlp((64, 64, 64, 10))
    middle = training.weight_matrices(model)[1]
    result = training.train_sgd(model, split, batch=2, lr=0.05, wd=0.1, steps=400, seed=0,
                                unroll=(middle, 100), check_gradients=5)
    tracker = result.unrolled
    found = rank.certificate(tracker.start, middle, tracker.total, rank.decay_factor(tracker.lrs, 0.1), 100, 2)
    assert found.unrolling_residual <= 1e-5
    assert found.epsilon == pytest.approx(0.995**100 * tracker.start.norm().item() / middle.detach().double().norm().item())
    assert found.holds and found.rank_budget == 200
    assert len(tracker.gradients_checked) == 5
    assert all(rank.numerical_rank(g, 1e-5) <= 2 for g in tracker.gradients_checked)  # Lemma: rank <= B


def test_training_is_deterministic_and_records_history():
    split = data.digits(n_train=200, seed=0)

    def run():
        torch.manual_seed(3)
        model = training.mlp((64, 16, 10))
        return training.train_sgd(model, split, batch=8, lr=0.1, wd=1e-3, steps=50, seed=3, record_every=10,
                                  record=lambda m: {"norm": float(training.weight_matrices(m)[0].detach().norm())})

    first, second = run(), run()
    assert [h["step"] for h in first.history] == [0, 10, 20, 30, 40, 50]
    assert first.history == second.history


def test_digits_are_standardised_on_the_training_split():
    split = data.digits(n_train=1400, seed=0)
    assert split.x_train.shape == (1400, 64) and split.x_test.shape == (397, 64) and split.n_classes == 10
    assert float(split.x_train.mean(0).abs().max()) < 1e-4
    assert data.digits(images=True).x_train.shape == (1400, 1, 8, 8)


def test_class_images_are_separable_by_their_prototypes():
    split = data.class_images(n_classes=4, n_train=200, n_test=100, size=16, noise=0.5, seed=0)
    assert split.x_train.shape == (200, 1, 16, 16)
    centres = torch.stack([split.x_train[split.y_train == k].mean(0) for k in range(4)]).flatten(1)
    nearest = torch.cdist(split.x_test.flatten(1), centres).argmin(1)
    assert float((nearest == split.y_test).float().mean()) > 0.9


def test_near_convergence_distance_by_hand():
    w = np.array([[3.0, 0.0], [0.0, 4.0]])
    g = np.array([[-0.3, 0.0], [0.0, 0.0]])  # W + g/wd with wd = 0.1 is diag(0, 4)
    assert rank.near_convergence_distance(w, g, 0.1) == pytest.approx(4.0 / 5.0)
    with pytest.raises(ValueError, match="wd"):
        rank.near_convergence_distance(w, g, 0.0)


def test_stacked_mlps_match_training_each_network_alone():
    """Oracle: training.train_sgd, one network at a time, with the same seed, rate and decay."""
    split = data.digits(n_train=200, seed=0)
    widths, configs = (64, 20, 20, 10), [dict(seed=0, lr=0.1, wd=5e-3), dict(seed=3, lr=0.3, wd=0.0)]
    stacked = rank.train_stacked_mlps(widths, split, configs, batch=8, steps=40, measure_at=[0, 20],
                                      measure=lambda ws, run: {"norm": float(ws[1].norm())})
    assert sorted(stacked.records) == [0, 20, 40]
    for k, c in enumerate(configs):
        torch.manual_seed(c["seed"])
        model = training.mlp(widths)
        training.train_sgd(model, split, batch=8, lr=c["lr"], wd=c["wd"], steps=40, seed=c["seed"])
        for alone, together in zip(training.weight_matrices(model), stacked.weights, strict=True):
            np.testing.assert_allclose(alone.detach().numpy(), together[k].numpy(), atol=1e-5)
        assert stacked.records[40][k]["test accuracy"] == training.accuracy(model, split.x_test, split.y_test)
        assert stacked.records[40][k]["norm"] == pytest.approx(float(training.weight_matrices(model)[1].detach().norm()))


def test_spectrum_measures_agree_with_the_single_measures():
    w = with_spectrum([3.0, 2.0, 1.0, 0.5, 1e-3], shape=(9, 7))
    found = rank.spectrum_measures(w, eps=(1e-3, 0.1), tail_eps=(0.1, 0.5))
    assert found == {"count rank 0.001": rank.count_rank(w, 1e-3), "count rank 0.1": rank.count_rank(w, 0.1),
                     "tail rank 0.1": rank.tail_rank(w, 0.1), "tail rank 0.5": rank.tail_rank(w, 0.5),
                     "stable rank": pytest.approx(rank.stable_rank(w))}
    layers = [torch.ones(3, 2), torch.tensor(w), torch.eye(4), torch.ones(1, 4)]
    mean = rank.hidden_measures(layers)
    assert mean["stable rank"] == pytest.approx((rank.stable_rank(w) + 4.0) / 2) and mean["count <= tail"] == 1.0


def test_sweep_rows_select_and_seed_statistics():
    split = data.digits(n_train=100, seed=0)
    rows = rank.stacked_sweep((64, 8, 8, 10), split, [dict(lr=0.1, wd=0.01), dict(lr=0.2, wd=0.0)], [0, 1],
                              batch=4, steps=30, measure_at=[0, 10])
    assert len(rows) == 3 * 4 and {r["step"] for r in rows} == {0, 10, 30}
    picked = rank.select(rows, lr=0.1, wd=0.01, step=30)
    assert [r["seed"] for r in picked] == [0, 1] and picked[0]["decay times"] == pytest.approx(0.1 * 0.01 * 30)
    values = [r["stable rank"] for r in picked]
    assert rank.seed_stats(picked, "stable rank") == pytest.approx(
        (np.mean(values), np.std(values, ddof=1), min(values), max(values)))
    pooled = rank.pooled_points(rows, "stable rank")
    assert len(pooled) == 4 and all(p["step"] > 0 for p in pooled)
    with pytest.raises(KeyError, match="no row"):
        rank.select(rows, lr=0.5)


def test_certificate_curve_matches_brute_force_eckart_young():
    rng = np.random.default_rng(0)
    end = rng.normal(size=(12, 12)) @ np.diag(np.geomspace(1, 1e-3, 12))
    norms = [np.linalg.norm(end), 1.1 * np.linalg.norm(end), 1.3 * np.linalg.norm(end), 0.9 * np.linalg.norm(end)]
    curve = rank.certificate_curve(end, norms, lr=0.5, wd=0.4, batch=3)
    u, s, vt = np.linalg.svd(end)
    for n in (1, 2, 3):
        eps = 0.8 ** n * norms[n] / norms[0]
        truncations = [np.linalg.norm(end - (u[:, :r] * s[:r]) @ vt[:r]) / norms[0] for r in range(13)]
        assert curve["epsilon"][n - 1] == pytest.approx(eps)
        assert curve["tail rank"][n - 1] == next(r for r, d in enumerate(truncations) if d <= eps + 1e-12)
        assert curve["distance"][n - 1] == pytest.approx(truncations[3 * n], abs=1e-12)
    assert list(curve["budget"]) == [3, 6, 9]


def test_certificate_experiment_agrees_with_its_own_curve_at_the_window():
    split = data.digits(n_train=200, seed=0)
    run = rank.certificate_experiment(split, widths=(64, 40, 40, 10), batch=1, lr=0.05, wd=0.1, steps=120,
                                      window=30, scan=60, seed=0, check_gradients=3, l4_examples=5)
    assert run.found.holds and run.found.unrolling_residual <= 1e-5
    assert run.curve["epsilon"][29] == pytest.approx(run.found.epsilon, rel=1e-6)
    assert run.curve["tail rank"][29] == run.found.tail_rank
    assert all(run.curve["tail rank"] <= run.curve["budget"]) and len(run.l4_distances) == 5
    assert run.gradient_ranks == [1, 1, 1]


def test_cnn_runs_and_the_matched_accuracy_control():
    split = data.digits(n_train=100, seed=0, images=True)
    rows = rank.cnn_runs(split, (0.0, 0.02), [0], steps=20, record_every=10, channels=4)
    assert [(r["wd"], r["step"]) for r in rows] == [(0.0, 0), (0.0, 10), (0.0, 20), (0.02, 0), (0.02, 10), (0.02, 20)]
    assert all(1 <= r["rank"] <= 4 for r in rows)
    synthetic = [{"wd": 0.0, "seed": 0, "step": t, "accuracy": a, "rank": k}
                 for t, a, k in ((0, 0.1, 32), (10, 0.5, 31), (20, 0.9, 30))]
    assert rank.matched_accuracy_rank(synthetic, 0, 0.4)["step"] == 10
    assert rank.matched_accuracy_rank(synthetic, 0, 0.95)["step"] == 20  # never reached: the last step


def test_batch_rate_grid_entries_are_the_seed_means_of_the_runs():
    split = data.digits(n_train=100, seed=0)
    grid = rank.batch_rate_grid((64, 8, 8, 10), split, [0], grid_size=2, steps=12, epochs=0.5, weight_decays=(0.01,))
    assert grid["batches"] == [4, 256] and grid[0.01, "steps"].shape == (2, 2)
    rows = rank.stacked_sweep((64, 8, 8, 10), split, [dict(lr=grid["rates"][1], wd=0.01)], [0], batch=4, steps=13,
                              measure_at=[12, 13])
    assert grid[0.01, "steps"][1, 0] == rank.select(rows, step=12)[0]["count rank 0.001"]
    assert grid[0.01, "epochs"][1, 0] == rank.select(rows, step=13)[0]["count rank 0.001"]  # ceil(0.5*100/4)


@pytest.mark.parametrize("call,message", [
    (lambda: rank.train_stacked_mlps((4, 2), None, [], batch=1, steps=1), "configs"),
    (lambda: rank.train_stacked_mlps((4, 2), None, [dict(seed=0, lr=0.1, wd=0)], batch=0, steps=1), "batch"),
    (lambda: rank.train_stacked_mlps((4, 2), None, [dict(seed=0, lr=-1, wd=0)], batch=1, steps=1), "config"),
    (lambda: rank.certificate_curve(np.eye(2), [1.0], 0.1, 0.1, 1), "norms"),
    (lambda: rank.certificate_experiment(None, widths=(4, 4, 4, 2), batch=1, lr=0.1, wd=0.1, steps=10, window=5,
                                         scan=20, seed=0), "scan"),
    (lambda: rank.batch_rate_grid((4, 2), None, [0], grid_size=1, steps=1, epochs=1), "grid_size"),
])
def test_bad_input_to_the_sweep_helpers_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_seed_tables_hide_every_measured_number_from_the_text_comparison():
    """Oracle: the nbval sanitizer's own regex (tests/nbval_sanitize.cfg) leaves no digit of a mean or a
    standard deviation in a printed seed table."""
    import re
    from pathlib import Path

    config = (Path(__file__).parent / "nbval_sanitize.cfg").read_text()
    pattern = re.search(r"\[measured numbers\]\nregex: (.*)\n", config).group(1)
    rows = [{"rank": 12.34}, {"rank": 15.5}, {"rank": 9.0}]
    text = rank.seed_table({"wd=x": rows}, ("rank",), ".2f")
    assert re.sub(pattern, "~MEASURED", text) == "wd=x  rank~MEASURED ±~MEASURED"  # the regex eats the padding


# --- the convolution operator and the paper's networks (full profile) --------------------------------------------

def circular_operator(kernel, height, width):
    """The brute-force matrix of a stride-1 convolution with circular padding: one column per basis image."""
    out_c, in_c, k, _ = kernel.shape
    size = in_c * height * width
    basis = torch.eye(size, dtype=torch.float64).reshape(size, in_c, height, width)
    pad = k // 2
    padded = torch.nn.functional.pad(basis, (pad, pad, pad, pad), mode="circular")
    out = torch.nn.functional.conv2d(padded, kernel.double())
    return out.reshape(size, -1).T.numpy()


@pytest.mark.parametrize("shape,size", [((3, 2, 3, 3), (5, 4)), ((2, 3, 3, 3), (2, 2)), ((4, 4, 1, 1), (3, 3))])
def test_conv_operator_singular_values_match_the_brute_force_circular_operator(shape, size):
    kernel = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    brute = np.linalg.svd(circular_operator(kernel, *size), compute_uv=False)
    found = rank.conv_operator_singular_values(kernel, size)
    np.testing.assert_allclose(found, brute[: len(found)], rtol=1e-9, atol=1e-10)
    assert np.allclose(brute[len(found):], 0, atol=1e-10)  # the rest of a wide operator's spectrum is 0
    eps = 1e-3
    assert rank.conv_operator_rank(kernel, size, eps) == int(np.sum(brute > eps * np.linalg.norm(brute)))


def test_conv_operator_rank_of_a_rank_one_kernel_is_the_number_of_positions():
    # K[o, i, p, q] = a_o b_i c_pq: every P(u, v) = a b^T c_hat(u, v) has rank 1 where c_hat(u, v) != 0
    a, b, c = torch.randn(4), torch.randn(3), torch.randn(3, 3)
    kernel = a[:, None, None, None] * b[None, :, None, None] * c[None, None]
    assert rank.conv_operator_rank(kernel, (6, 6), 1e-6) == 36
    assert rank.conv_operator_rank(torch.randn(5, 5, 3, 3), (4, 4), 1e-6) == 5 * 16


def test_conv_inputs_follow_the_resnet_stages():
    model = rank.paper_network("resnet18", data.Split(torch.zeros(2, 3, 32, 32), torch.tensor([0, 9]),
                                                      torch.zeros(2, 3, 32, 32), torch.tensor([0, 9])), width=4)
    found = rank.conv_inputs(model, torch.zeros(2, 3, 32, 32))
    assert len(found) == 20  # stem, 16 block convolutions, 3 shortcuts
    assert {f["input_size"] for f in found.values()} == {(32, 32), (16, 16), (8, 8), (4, 4)}
    assert sum(f["stride"] == (2, 2) for f in found.values()) == 6  # 3 first convolutions + 3 shortcuts


def test_layer_ranks_match_constructed_spectra_and_weight_normalisation():
    linear = torch.nn.Linear(6, 8)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(with_spectrum([3.0, 2.0, 1e-5], shape=(8, 6)), dtype=torch.float32))
    conv = torch.nn.Conv2d(2, 3, 3)
    normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 4))
    with torch.no_grad():  # W = g V / ||V|| row-wise: g = 0 on two rows leaves rank 2
        normed.parametrizations.weight.original0.copy_(torch.tensor([[1.0], [2.0], [0.0], [0.0]]))
    rows = rank.layer_ranks(torch.nn.Sequential(linear, conv, normed), eps=1e-3)
    assert [r["rank"] for r in rows] == [2, 3, 2]
    assert [r["shape"] for r in rows] == [(8, 6), (3, 18), (4, 4)]
    assert rows[0]["stable rank"] == pytest.approx(13 / 9, rel=1e-5)
    assert rank.mean_rank(rows) == pytest.approx(7 / 3)
    assert rank.mean_rank(rows, relative=True) == pytest.approx((2 / 6 + 3 / 3 + 2 / 4) / 3)


def test_mlp_bn_wn_has_the_closed_form_parameter_count():
    split = data.Split(torch.zeros(2, 3, 32, 32), torch.tensor([0, 9]), torch.zeros(2, 3, 32, 32), torch.tensor([0, 9]))
    model = rank.paper_network("mlp_bn_wn", split, width=64)  # the paper's width 100, depth 10
    w, d = 100, 3 * 32 * 32
    hidden = (d * w + 4 * w) + 8 * (w * w + 4 * w)  # V, g, bias, batch norm's scale and shift
    assert sum(p.numel() for p in model.parameters()) == hidden + w * 10 + 10


def test_schedules_and_protocols_follow_their_closed_forms():
    assert rank.compressed_milestones(200) == (60, 100)
    assert rank.compressed_milestones(20) == (6, 10)
    assert rank.compressed_milestones(500, over=500) == (60, 100, 200)
    assert rank.compressed_milestones(2) == (1,)
    assert rank.protocol_epochs(64, 30, 64, "steps") == 30 and rank.protocol_epochs(16, 30, 64, "steps") == 8
    assert rank.protocol_epochs(256, 30, 64, "steps") == 120 and rank.protocol_epochs(16, 30, 64, "epochs") == 30
    with pytest.raises(ValueError, match="protocol"):
        rank.protocol_epochs(16, 30, 64, "time")


@pytest.fixture(scope="module")
def tiny_cifar():
    return data.public_images("cifar10", smoke=True, smoke_sizes=(64, 32), seed=0, root=Path("/nonexistent"))


def test_train_paper_network_follows_the_step_schedule_and_measures_every_matrix(tiny_cifar):
    run = rank.train_paper_network("resnet18", tiny_cifar, width=2, batch=16, lr=0.1, wd=5e-3, epochs=3,
                                   milestones=(1, 2), record_every=1)
    assert run.steps == 3 * 4 and [h["lr"] for h in run.history] == pytest.approx([0.1, 0.02, 0.004])
    assert len(run.layers) == 21 and all(0 <= r["rank"] <= r["full"] for r in run.layers)
    with_operator = [r for r in run.layers if "operator rank" in r]
    # stride-1 convolutions on maps of 8x8 or more: the stem and 10 block convolutions (the 4x4 stage is out)
    assert len(with_operator) == 11
    assert all(r["operator rank"] <= r["operator full"] for r in with_operator)
    assert 0 <= run.test_accuracy <= 1 and run.summary()["mean rank"] == pytest.approx(rank.mean_rank(run.layers))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    rank.plot_paper_runs(axes, [run], (1, 2))
    assert len(axes[1].lines) == 3  # the run's curve and two milestones
    plt.close(fig)


def test_paper_grid_gives_equal_steps_under_the_fixed_step_protocol(tiny_cifar):
    saved = {}

    def checkpoint(key, compute):
        return saved[key] if key in saved else saved.setdefault(key, compute())

    def grid():
        return rank.paper_grid("mlp_bn_wn", tiny_cifar, width=4, batches=(16, 32), rates=(0.1, 0.2),
                               weight_decays=(0.0, 1e-2), epochs=1, reference_batch=16, checkpoint=checkpoint)

    rows = grid()
    assert len(rows) == 16 and len(saved) == 12  # B = 16 shares its run between the protocols
    assert grid() == rows  # resumed from the saved runs
    steps = [r["steps"] for r in rows if r["protocol"] == "steps"]
    assert steps == [4] * 8  # 64 samples: 4 steps of 16, or 2 epochs of 2 steps of 32
    batches, rates, values = rank.grid_array(rows, 1e-2, "epochs")
    assert batches == [16, 32] and rates == [0.1, 0.2] and values.shape == (2, 2) and not np.isnan(values).any()
    assert all(r["mean rank"] <= 6 for r in rows)  # width round(100 * 4 / 64) = 6
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, squeeze=False)
    rank.plot_paper_grid(fig, axes, rows)
    plt.close(fig)
    with pytest.raises(ValueError, match="at least 2"):
        rank.paper_grid("mlp_bn_wn", tiny_cifar, width=4, batches=(16,), rates=(0.1, 0.2), weight_decays=(0.0,),
                        epochs=1, reference_batch=16)


def test_on_device_keeps_the_tensors():
    split = data.digits(n_train=100)
    moved = rank.on_device(split, "cpu")
    assert torch.equal(moved.x_train, split.x_train) and moved.y_test.device.type == "cpu"


def test_a_diverged_matrix_gets_nan_measures_instead_of_an_error():
    bad = torch.eye(4)
    bad[0, 0] = float("nan")
    assert all(math.isnan(v) for v in rank.spectrum_measures(bad).values())
    layer = torch.nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.copy_(bad)
    row = rank.layer_ranks(torch.nn.Sequential(layer))[0]
    assert math.isnan(row["rank"]) and row["full"] == 4
