"""theorylab.bounds against hand computations on tiny networks, explicit dense operators built from basis
images, and the proved ratio between the two bounds."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from theorylab import bounds
from theorylab.data import teacher_tree_images


@pytest.mark.parametrize("stride,padding_free_shape", [(1, (2, 6, 6)), (2, (3, 8, 8)), (3, (1, 7, 7))])
def test_toeplitz_norm_is_sqrt_output_positions_times_filter_norm(stride, padding_free_shape):
    torch.manual_seed(0)
    layer = nn.Conv2d(padding_free_shape[0], 4, 3 if stride != 2 else 2, stride=stride, bias=False)
    dense = bounds.dense_operator(layer, padding_free_shape)
    positions = dense.shape[0] // 4
    expected = math.sqrt(positions) * float(layer.weight.detach().double().norm())
    assert np.linalg.norm(dense) == pytest.approx(expected, rel=1e-12)


def test_dense_operator_reproduces_the_convolution():
    torch.manual_seed(1)
    layer = nn.Conv2d(2, 3, 2, stride=1, bias=False).double()
    x = torch.randn(2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        direct = layer(x[None])[0].reshape(-1).numpy()
    assert np.allclose(bounds.dense_operator(layer, (2, 5, 5)) @ x.reshape(-1).numpy(), direct)


def test_architecture_of_the_students_by_hand():
    tree = bounds.architecture(bounds.sparse_cnn("tree", 8), (1, 8, 8))
    assert tree.degrees == (4, 4, 4, 1) and tree.output_positions == (16, 4, 1, 1)
    overlap = bounds.architecture(bounds.sparse_cnn("overlap", 8), (1, 8, 8))
    assert overlap.degrees == (4, 4, 4, 25) and overlap.output_positions == (49, 36, 25, 1)
    assert overlap.toeplitz_norm_product == pytest.approx(overlap.filter_norm_product * 7 * 6 * 5)


def test_bounds_by_hand_on_a_one_layer_network():
    """One 2x2 read-out over a 2x2 image: T2 = |w| * 2 * sqrt(max E) / n * (1 + sqrt(2 log 4)); GRS with
    L = 1, k = 1: |w| sqrt(sum E) / n * (1 + sqrt(2 log 2))."""
    x = np.array([[[[1.0, 2.0], [0.0, 1.0]]], [[[1.0, 0.0], [3.0, 1.0]]]])
    energies = bounds.pixel_energies(x)
    assert list(energies) == [2.0, 4.0, 9.0, 2.0]
    assert bounds.sparse_rademacher_bound(1.5, [4], energies.max(), 2) == pytest.approx(
        1.5 * 2 * 3 / 2 * (1 + math.sqrt(2 * math.log(4))))
    assert bounds.grs_rademacher_bound(1.5, 1, energies.sum(), 2) == pytest.approx(
        1.5 * math.sqrt(17) / 2 * (1 + math.sqrt(2 * math.log(2))))


def test_sparse_bound_reduces_to_grs_form_with_unit_degrees():
    """deg = 1 everywhere: T2 is T1 with (L - 1) log 2 in place of L log 2 (single pixel = whole input)."""
    value = bounds.sparse_rademacher_bound(2.0, [1, 1, 1], 9.0, 10, n_outputs=3)
    assert value == pytest.approx(2.0 * 3.0 / 10 * (1 + math.sqrt(2 * (2 * math.log(2) + math.log(3)))))


def test_ratio_of_the_bounds_equals_c1_on_real_students():
    x, _ = teacher_tree_images(300, seed=1)
    energies = bounds.pixel_energies(x.numpy())
    for kind in ("tree", "overlap"):
        torch.manual_seed(2)
        arch = bounds.architecture(bounds.sparse_cnn(kind, 4, n_outputs=3), (1, 8, 8))
        grs = bounds.grs_rademacher_bound(arch.toeplitz_norm_product, arch.depth, energies.sum(), 300, 3)
        sparse = bounds.sparse_rademacher_bound(arch.filter_norm_product, arch.degrees, energies.max(), 300, 3)
        assert grs / sparse == pytest.approx(bounds.bound_ratio(arch, energies)["total"], rel=1e-12)


def test_architecture_factors_match_the_table():
    assert bounds.architecture_factors(28, 3, 1)["ratio"] == pytest.approx(17550 / 200)
    assert bounds.architecture_factors(8, 3, 2) == {"toeplitz": 8.0, "sparse": 8.0, "ratio": 1.0}


def test_margin_bound_and_bad_input():
    margins = np.array([1.0, 0.2, -0.1, 2.0])
    result = bounds.margin_bound(lambda r: 0.1 * r, 3.0, margins, 0.5, 0.01)
    assert result["rho grid"] == 4.0 and result["empirical margin loss"] == 0.5
    assert result["bound"] == pytest.approx(0.5 + 2 / 0.5 * 0.4 + 3 * math.sqrt(math.log(8 / 0.01) / 8))
    with pytest.raises(ValueError, match="delta"):
        bounds.margin_bound(lambda r: r, 1.0, margins, 0.5, 1.5)
    with pytest.raises(ValueError, match="empty"):
        bounds.margin_bound(lambda r: r, 1.0, np.array([]), 0.5, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        bounds.margin_bound(lambda r: r, 1.0, margins, 0.0, 0.1)
    with pytest.raises(ValueError, match="no sparse"):
        bounds.architecture(nn.Sequential(nn.ReLU()), (1, 8, 8))
    with pytest.raises(ValueError, match="bias"):
        bounds.architecture(nn.Sequential(nn.Conv2d(1, 2, 8)), (1, 8, 8))
    with pytest.raises(ValueError, match="MaxPool2d"):
        bounds.architecture(nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.MaxPool2d(2)), (1, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        bounds.pixel_energies(np.zeros((0, 1, 8, 8)))


def test_effective_depth_and_ncc_accuracy():
    assert bounds.effective_depth([0.5, 0.98, 0.995, 1.0], 0.01) == 2
    assert bounds.effective_depth([0.5, 0.6], 0.01) is None
    features = np.array([[0.0], [0.1], [5.0], [5.2]])
    assert bounds.ncc_train_accuracy(features, np.array([0, 0, 1, 1])) == 1.0
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    layers = bounds.layerwise_features(model, torch.randn(5, 3))
    assert [f.shape for f in layers] == [(5, 3), (5, 4)]


def test_teacher_labels_are_balanced_and_deterministic():
    x, y = teacher_tree_images(2000, seed=3)
    x2, y2 = teacher_tree_images(2000, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert 0.4 < float(y.float().mean()) < 0.6
