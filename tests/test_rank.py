"""theorylab.rank on constructed matrices with known spectra, and the certificate on a real SGD run."""
import math

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
