"""Tests of ``theorylab.training``: network builders, targets, step counts, accuracy and the SGD loop.

Oracles: layer-by-layer structure and parameter counts in closed form, hand-computed targets and
accuracies, exact ceil arithmetic with fractions, plain gradient descent written out by hand, the
closed form of weight decay on a zero gradient, and the unrolled sum identity
:math:`W_T=(1-\\mu\\,\\mathrm{wd})^n W_{T-n}+S`. Sizes are tiny (a few linear maps on a dozen samples)."""
from __future__ import annotations

import copy
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from theorylab import training
from theorylab.data import Split
from theorylab.training import (
    TrainResult,
    UnrolledSum,
    accuracy,
    mlp,
    pm_one_targets,
    small_cnn,
    steps_for_epochs,
    train_sgd,
    weight_matrices,
)


def tiny_split(n: int = 12, dim: int = 3, n_classes: int = 3, seed: int = 0) -> Split:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, dim), generator=generator)
    y = torch.arange(n) % n_classes
    return Split(x, y, x[:0], y[:0])


def seeded_linear(dim: int = 3, n_out: int = 3, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(dim, n_out)


# mlp --------------------------------------------------------------------------------------------


def test_mlp_alternates_linear_maps_and_activations_with_the_given_widths():
    net = mlp([4, 5, 6, 2])
    kinds = [type(layer) for layer in net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 5), (5, 6), (6, 2)]
    assert net(torch.zeros(7, 4)).shape == (7, 2)


def test_mlp_with_two_widths_is_a_single_linear_map_without_activation():
    net = mlp([3, 2])
    assert len(net) == 1 and isinstance(net[0], nn.Linear)


def test_mlp_tanh_activation_uses_tanh_between_layers():
    net = mlp([2, 3, 1], activation="tanh")
    assert [type(layer) for layer in net] == [nn.Linear, nn.Tanh, nn.Linear]


def test_mlp_parameter_count_matches_closed_form():
    widths = [5, 7, 3, 2]
    expected = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert sum(p.numel() for p in mlp(widths).parameters()) == expected


@pytest.mark.parametrize("activation, gain", [("relu", math.sqrt(2.0)), ("tanh", 5.0 / 3.0)])
def test_mlp_kaiming_init_has_zero_biases_and_fan_in_standard_deviation(activation, gain):
    torch.manual_seed(0)
    fan_in = 256
    net = mlp([fan_in, 256, 4], init="kaiming", activation=activation)
    weight = net[0].weight.detach().double()
    assert torch.count_nonzero(net[0].bias) == 0 and torch.count_nonzero(net[2].bias) == 0
    expected = gain / math.sqrt(fan_in)
    # sample std of n Gaussian entries has standard error sigma / sqrt(2n); allow 5 of them
    tolerance = 5 * expected / math.sqrt(2 * weight.numel())
    assert abs(float(weight.std()) - expected) < tolerance
    assert abs(float(weight.mean())) < 5 * expected / math.sqrt(weight.numel())


def test_mlp_default_init_is_deterministic_under_a_torch_seed_and_differs_across_seeds():
    torch.manual_seed(1)
    a = mlp([3, 4, 2])
    torch.manual_seed(1)
    b = mlp([3, 4, 2])
    torch.manual_seed(2)
    c = mlp([3, 4, 2])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("kwargs", [dict(widths=[3]), dict(widths=[]), dict(widths=[3, 0, 2]),
                                    dict(widths=[3, 2], init="xavier"), dict(widths=[3, 2], activation="gelu")])
def test_mlp_rejects_bad_arguments_with_value_error(kwargs):
    with pytest.raises(ValueError):
        mlp(**kwargs)


# small_cnn ----------------------------------------------------------------------------------------


def test_small_cnn_structure_output_shape_and_parameter_count():
    torch.manual_seed(0)
    net = small_cnn(channels=4, n_classes=3, in_channels=2)
    assert net(torch.zeros(5, 2, 6, 6)).shape == (5, 3)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (2, 4, (3, 3), (1, 1)), (4, 4, (3, 3), (1, 1))]
    expected = (2 * 9 * 4 + 4) + (4 * 9 * 4 + 4) + (4 * 3 + 3)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_small_cnn_with_hidden_head_has_two_linear_layers_with_relu_between():
    torch.manual_seed(0)
    net = small_cnn(channels=4, n_classes=3, head=(5,))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 5), (5, 3)]
    assert isinstance(net[-2], nn.ReLU)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_small_cnn_global_average_pool_accepts_any_image_size():
    torch.manual_seed(0)
    net = small_cnn(channels=3, n_classes=2)
    assert net(torch.randn(2, 1, 5, 7)).shape == (2, 2)
    assert net(torch.randn(1, 1, 1, 1)).shape == (1, 2)


@pytest.mark.parametrize("kwargs", [dict(channels=0), dict(n_classes=0), dict(in_channels=0), dict(head=(4, 0))])
def test_small_cnn_rejects_non_positive_sizes_with_value_error(kwargs):
    with pytest.raises(ValueError):
        small_cnn(**kwargs)


# weight_matrices ------------------------------------------------------------------------------------


def test_weight_matrices_returns_every_linear_and_conv_weight_in_order_and_by_identity():
    torch.manual_seed(0)
    net = small_cnn(channels=2, n_classes=3, head=(4,))
    expected = [net[0].weight, net[2].weight, net[6].weight, net[8].weight]
    got = weight_matrices(net)
    assert len(got) == 4 and all(a is b for a, b in zip(got, expected, strict=True))
    assert weight_matrices(nn.Sequential(nn.ReLU())) == []


# pm_one_targets -------------------------------------------------------------------------------------


def test_pm_one_targets_single_output_maps_label_one_to_plus_one_and_zero_to_minus_one():
    targets = pm_one_targets(torch.tensor([0, 1, 1, 0]), 1)
    assert targets.shape == (4, 1) and targets.dtype == torch.float32
    assert targets[:, 0].tolist() == [-1.0, 1.0, 1.0, -1.0]


def test_pm_one_targets_several_outputs_is_plus_one_at_the_label_and_minus_one_elsewhere():
    labels = torch.tensor([2, 0, 1])
    targets = pm_one_targets(labels, 4)
    expected = torch.full((3, 4), -1.0)
    expected[torch.arange(3), labels] = 1.0
    assert targets.dtype == torch.float32 and torch.equal(targets, expected)
    assert torch.equal(targets.sum(dim=1), torch.full((3,), 2.0 - 4.0))


# steps_for_epochs ------------------------------------------------------------------------------------


def test_steps_for_epochs_matches_exact_ceil_arithmetic():
    # dyadic epochs are exact in binary, so Fraction arithmetic is the exact oracle
    for n_samples in (1, 7, 10, 64, 1797):
        for batch in (1, 3, 32, 5000):
            for epochs in (0.25, 0.5, 1, 1.5, 3, 10.75):
                expected = math.ceil(Fraction(epochs) * n_samples / batch)
                assert steps_for_epochs(n_samples, batch, epochs) == expected, (n_samples, batch, epochs)


def test_steps_for_epochs_hand_cases():
    assert steps_for_epochs(100, 10, 1) == 10
    assert steps_for_epochs(101, 10, 1) == 11
    assert steps_for_epochs(10, 3, 2) == 7
    assert steps_for_epochs(1, 1000, 0.001) == 1


def test_steps_for_epochs_decimal_epochs_are_not_rounded_up_by_float_error():
    assert steps_for_epochs(50, 1, 1.1) == 55


@pytest.mark.parametrize("args", [(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, -1), (-3, 1, 1)])
def test_steps_for_epochs_rejects_non_positive_arguments_with_value_error(args):
    with pytest.raises(ValueError):
        steps_for_epochs(*args)


# accuracy ---------------------------------------------------------------------------------------------


def test_accuracy_of_a_hand_built_linear_classifier():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # predicts the larger coordinate
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1, 0])
    assert accuracy(model, x, y) == 0.5
    assert accuracy(model, x[:2], y[:2]) == 1.0
    assert isinstance(accuracy(model, x, y), float)


def test_accuracy_builds_no_autograd_graph():
    model = nn.Linear(2, 2)
    accuracy(model, torch.randn(3, 2), torch.tensor([0, 1, 0]))
    assert model.weight.grad is None


# train_sgd ----------------------------------------------------------------------------------------------


def test_train_sgd_weight_decay_with_zero_gradient_shrinks_weights_by_exactly_one_minus_lr_wd_per_step():
    # all-zero inputs: the weight gradient x^T dL/dout is exactly zero, only decay acts on the weight
    x = torch.zeros(6, 3)
    data = Split(x, torch.tensor([0, 1, 2, 0, 1, 2]), x[:0], torch.zeros(0, dtype=torch.long))
    model = seeded_linear()
    start = model.weight.detach().clone()
    lr, wd, steps = 1.0, 0.5, 5  # 1 - lr*wd = 1/2: every product is exact in float32
    train_sgd(model, data, batch=4, lr=lr, wd=wd, steps=steps)
    assert torch.equal(model.weight.detach(), start * (1 - lr * wd) ** steps)


def test_train_sgd_weight_decay_with_zero_gradient_general_rate_matches_closed_form_to_float32_rounding():
    x = torch.zeros(6, 3)
    data = Split(x, torch.tensor([0, 1, 2, 0, 1, 2]), x[:0], torch.zeros(0, dtype=torch.long))
    model = seeded_linear()
    start = model.weight.detach().double().clone()
    lr, wd, steps = 0.1, 0.3, 20
    train_sgd(model, data, batch=None, lr=lr, wd=wd, steps=steps)
    torch.testing.assert_close(model.weight.detach().double(), start * (1 - lr * wd) ** steps, rtol=1e-6, atol=0)


def gradient_descent_by_hand(model: nn.Module, data: Split, lr: float, wd: float, steps: int, squared: bool = False):
    for _ in range(steps):
        model.zero_grad()
        outputs = model(data.x_train)
        if squared:
            targets = 2.0 * nn.functional.one_hot(data.y_train, outputs.shape[1]).float() - 1.0
            loss = ((outputs - targets) ** 2).sum() / len(outputs)
        else:
            loss = -torch.log_softmax(outputs, dim=1)[torch.arange(len(outputs)), data.y_train].mean()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * (p.grad + wd * p)
    return model


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_train_sgd_full_batch_equals_gradient_descent_written_by_hand(loss):
    data = tiny_split()
    model = seeded_linear()
    reference = gradient_descent_by_hand(copy.deepcopy(model), data, lr=0.2, wd=0.01, steps=8, squared=loss == "squared")
    result = train_sgd(model, data, batch=None, lr=0.2, wd=0.01, steps=8, loss=loss)
    for p, q in zip(result.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_train_sgd_squared_loss_single_output_uses_plus_minus_one_targets():
    data = tiny_split(n_classes=2)
    model = seeded_linear(n_out=1)
    reference = copy.deepcopy(model)
    train_sgd(model, data, batch=None, lr=0.1, wd=0.0, steps=1, loss="squared")
    out = reference(data.x_train)
    loss = ((out[:, 0] - (2.0 * data.y_train.float() - 1.0)) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        torch.testing.assert_close(model.weight, reference.weight - 0.1 * reference.weight.grad)


def test_train_sgd_is_deterministic_for_a_seed_and_differs_across_seeds():
    data = tiny_split()

    def run(seed):
        return train_sgd(seeded_linear(), data, batch=2, lr=0.5, wd=0.0, steps=5, seed=seed).model.weight.detach()

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_train_sgd_minibatch_with_all_identical_samples_equals_full_batch():
    # every draw picks the same sample, so the minibatch gradient equals the full-batch one
    x = torch.tensor([[0.5, -1.0, 2.0]]).repeat(5, 1)
    data = Split(x, torch.full((5,), 1), x[:0], torch.zeros(0, dtype=torch.long))
    a = train_sgd(seeded_linear(), data, batch=3, lr=0.3, wd=0.1, steps=4, seed=7).model
    b = train_sgd(seeded_linear(), data, batch=None, lr=0.3, wd=0.1, steps=4).model
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_train_sgd_records_every_k_steps_and_at_the_end():
    calls = []

    def record(model):
        calls.append(model)
        return {"norm": float(model.weight.detach().norm())}

    result = train_sgd(seeded_linear(), tiny_split(), batch=2, lr=0.1, wd=0.0, steps=7, record_every=3, record=record)
    assert isinstance(result, TrainResult) and result.steps == 7 and result.unrolled is None
    assert [h["step"] for h in result.history] == [0, 3, 6, 7]
    assert all("norm" in h for h in result.history)
    assert all(m is result.model for m in calls)
    assert result.history[-1]["norm"] == pytest.approx(float(result.model.weight.detach().norm()))


def test_train_sgd_without_record_every_records_only_the_end_and_without_record_nothing():
    data = tiny_split()
    only_end = train_sgd(seeded_linear(), data, batch=2, lr=0.1, wd=0.0, steps=4, record=lambda m: {})
    assert only_end.history == [{"step": 4}]
    assert train_sgd(seeded_linear(), data, batch=2, lr=0.1, wd=0.0, steps=4).history == []


def test_train_sgd_unrolled_sum_reconstructs_the_final_weight():
    data = tiny_split()
    model = seeded_linear()
    lr, wd, steps, window = 0.3, 0.05, 9, 4
    result = train_sgd(model, data, batch=3, lr=lr, wd=wd, steps=steps, unroll=(model.weight, window), seed=1)
    tracker = result.unrolled
    assert isinstance(tracker, UnrolledSum) and tracker.window == window and tracker.weight is model.weight
    assert tracker.start.dtype == tracker.total.dtype == torch.float64
    assert tracker.lrs == [lr] * window
    # W_T = (1 - lr*wd)^n W_{T-n} + S, up to float32 rounding of the trained weight
    rebuilt = (1 - lr * wd) ** window * tracker.start + tracker.total
    torch.testing.assert_close(model.weight.detach().double(), rebuilt, rtol=1e-5, atol=1e-6)


def test_train_sgd_unrolled_window_of_all_steps_starts_at_the_initial_weight_and_checks_its_gradient():
    data = tiny_split()
    model = seeded_linear()
    initial = copy.deepcopy(model)
    result = train_sgd(model, data, batch=None, lr=0.1, wd=0.0, steps=6, unroll=(model.weight, 6), check_gradients=3)
    tracker = result.unrolled
    assert torch.equal(tracker.start, initial.weight.detach().double())
    assert len(tracker.gradients_checked) == 3
    # the first checked step is the first of the window: the full-batch gradient at the initial weights
    nn.functional.cross_entropy(initial(data.x_train), data.y_train).backward()
    torch.testing.assert_close(tracker.gradients_checked[0], initial.weight.grad.double())


def test_train_sgd_checked_gradients_are_evenly_spaced_steps_of_the_window():
    data = tiny_split()
    model = seeded_linear()
    # full batch, no decay: W_{s+1} = W_s - lr G_s, so G_s is recoverable from a recorded weight history
    result = train_sgd(model, data, batch=None, lr=0.1, wd=0.0, steps=8, unroll=(model.weight, 4), check_gradients=2,
                       record_every=1, record=lambda m: {"w": m.weight.detach().double().clone()})
    weights = [h["w"] for h in result.history]
    gradients = [(weights[s] - weights[s + 1]) / 0.1 for s in range(8)]
    checked = result.unrolled.gradients_checked
    assert len(checked) == 2  # steps 4 and 6
    torch.testing.assert_close(checked[0], gradients[4], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(checked[1], gradients[6], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(batch=True), dict(batch=2.0), dict(batch=-1), dict(steps=0), dict(lr=0.0), dict(lr=-0.1), dict(wd=-0.1),
    dict(loss="hinge"), dict(momentum=1.0), dict(momentum=-0.1), dict(unroll_window=0), dict(unroll_window=6),
    dict(momentum=0.9, unroll_window=2),
])
def test_train_sgd_rejects_bad_arguments_with_value_error(kwargs):
    model = seeded_linear()
    arguments = dict(batch=2, lr=0.1, wd=0.0, steps=5)
    window = kwargs.pop("unroll_window", None)
    arguments.update(kwargs)
    if window is not None:
        arguments["unroll"] = (model.weight, window)
    with pytest.raises(ValueError):
        train_sgd(model, tiny_split(), **arguments)


def test_train_sgd_rejects_zero_batch_with_value_error():
    with pytest.raises(ValueError):
        train_sgd(seeded_linear(), tiny_split(), batch=0, lr=0.1, wd=0.0, steps=2)


# --- train_epochs: the papers' protocol ------------------------------------------------------------

def _tiny_split(n=10, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long()
    return Split(x, y, x, y)


def test_train_epochs_takes_ceil_n_over_b_steps_per_epoch_and_follows_the_step_schedule():
    model = nn.Linear(4, 2)
    result = training.train_epochs(model, _tiny_split(10), batch=4, lr=0.5, wd=0.0, epochs=5,
                                   milestones=(2, 4), gamma=0.1, record_every=1,
                                   record=lambda m: {"mode": m.training})
    assert result.steps == 5 * 3 and result.epochs == 5
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5]
    rates = [row["lr"] for row in result.history]
    assert rates == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005])  # lr * gamma^(milestones passed)
    assert not any(row["mode"] for row in result.history) and not model.training


def test_one_full_batch_epoch_is_one_plain_sgd_step_with_weight_decay():
    split = _tiny_split(8)
    torch.manual_seed(1)
    model = nn.Linear(4, 2)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    loss = nn.functional.cross_entropy(model(split.x_train), split.y_train)
    gw, gb = torch.autograd.grad(loss, (model.weight, model.bias))
    training.train_epochs(model, split, batch=8, lr=0.1, wd=0.01, epochs=1)
    # W <- W - lr (G + wd W): PyTorch's SGD with weight_decay, the update the chapters analyse
    assert torch.allclose(model.weight, w0 - 0.1 * (gw + 0.01 * w0), atol=1e-6)
    assert torch.allclose(model.bias, b0 - 0.1 * (gb + 0.01 * b0), atol=1e-6)


def test_each_epoch_visits_every_sample_once():
    visits = torch.zeros(10)

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            for row in x:
                visits[int(row[0].item())] += 1
            return self.linear(x)

    x = torch.arange(10.0)[:, None].repeat(1, 4)
    split = Split(x, torch.zeros(10, dtype=torch.long), x, torch.zeros(10, dtype=torch.long))
    training.train_epochs(Counter(), split, batch=3, lr=0.01, wd=0.0, epochs=2)
    assert torch.equal(visits, torch.full((10,), 2.0))


def test_random_crop_flip_is_a_shift_of_the_padded_image_possibly_mirrored_by_brute_force():
    padding = 2
    images = torch.randn(40, 2, 5, 6)
    out = training.random_crop_flip(images, torch.Generator().manual_seed(0), padding=padding)
    padded = nn.functional.pad(images, (padding,) * 4)
    seen_offsets, seen_flips = set(), set()
    for k in range(len(images)):
        matches = [(dy, dx, flip) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                   for flip in (False, True)
                   if torch.equal(out[k], (lambda c: c.flip(2) if flip else c)(padded[k, :, dy:dy + 5, dx:dx + 6]))]
        assert matches, f"image {k} is no shifted crop of its padded self"
        seen_offsets |= {m[:2] for m in matches}
        seen_flips |= {m[2] for m in matches}
    assert len(seen_offsets) > 5 and seen_flips == {False, True}  # it does move and mirror


def test_batches_cover_each_index_once_and_never_leave_a_batch_of_one():
    for n in range(1, 40):
        for batch in range(1, 12):
            bounds = training.batch_bounds(n, batch)
            assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
            assert all(b - a <= batch + 1 for a, b in bounds)
            assert n == 1 or all(b - a >= 2 for a, b in bounds) or batch == 1


def test_batch_norm_network_trains_when_the_last_batch_would_hold_one_sample():
    split = Split(torch.randn(9, 4), torch.randint(0, 2, (9,)), torch.randn(3, 4), torch.randint(0, 2, (3,)))
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    assert training.train_epochs(model, split, batch=4, lr=0.1, wd=0.0, epochs=1).steps == 2


def test_batched_accuracy_matches_one_pass():
    split = _tiny_split(37, seed=4)
    model = nn.Linear(4, 2)
    full = (model(split.x_test).argmax(1) == split.y_test).float().mean().item()
    assert training.batched_accuracy(model, split.x_test, split.y_test, batch=5) == pytest.approx(full)


@pytest.mark.parametrize("kwargs", [dict(batch=0), dict(epochs=0), dict(lr=0.0), dict(momentum=1.0),
                                    dict(gamma=0.0), dict(loss="hinge")])
def test_train_epochs_names_bad_arguments(kwargs):
    options = dict(batch=2, lr=0.1, wd=0.0, epochs=1) | kwargs
    with pytest.raises(ValueError):
        training.train_epochs(nn.Linear(4, 2), _tiny_split(), **options)
