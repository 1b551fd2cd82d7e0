"""theorylab.bounds against hand computations on tiny networks, explicit dense operators built from basis
images, and the proved ratio between the two bounds."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from theorylab import bounds
from theorylab.bounds import teacher_tree_images


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


def test_stacked_tree_matches_its_convolutional_twin():
    """Oracle: nn.Conv2d (via StackedTree.single) on the same weights, model by model."""
    torch.manual_seed(4)
    stacked = bounds.StackedTree(3, 5, image_size=8)
    x = torch.randn(3, 7, 1, 8, 8)
    with torch.no_grad():
        out = stacked(x)
        for m in range(3):
            twin = stacked.single(m)
            assert torch.allclose(out[m], twin(x[m]), atol=1e-5)
            assert stacked.filter_norm_products()[m] == pytest.approx(
                bounds.architecture(twin, (1, 8, 8)).filter_norm_product, rel=1e-6)
    assert stacked.degrees == bounds.architecture(stacked.single(0), (1, 8, 8)).degrees


def test_stacked_mlp_matches_nn_linear():
    torch.manual_seed(5)
    stacked = bounds.StackedMLP(2, [6, 5, 4, 3])
    x = torch.randn(2, 9, 6)
    for m in range(2):
        twin = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        linears = [layer for layer in twin if isinstance(layer, nn.Linear)]
        with torch.no_grad():
            for layer, w, b in zip(linears, stacked.weights, stacked.biases, strict=True):
                layer.weight.copy_(w[m])
                layer.bias.copy_(b[m])
            assert torch.allclose(stacked(x)[m], twin(x[m]), atol=1e-5)
            assert torch.allclose(stacked.features(x)[2][m], twin[:4](x[m]), atol=1e-5)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_stacked_training_equals_training_each_model_alone(loss):
    """Two models trained in one stack follow the trajectories they follow when trained one at a time."""
    torch.manual_seed(6)
    if loss == "squared":
        together, make = bounds.StackedTree(2, 4), lambda: bounds.StackedTree(1, 4)
        x, y = torch.randn(2, 50, 1, 8, 8), torch.randint(0, 2, (2, 50))
    else:
        together, make = bounds.StackedMLP(2, [6, 8, 3]), lambda: bounds.StackedMLP(1, [6, 8, 3])
        x, y = torch.randn(2, 50, 6), torch.randint(0, 3, (2, 50))
    alone = [make() for _ in range(2)]
    with torch.no_grad():
        for m, single in enumerate(alone):
            for p, q in zip(single.parameters(), together.parameters(), strict=True):
                p.copy_(q[m:m + 1])
    options = dict(batch=8, lr=0.05, wd=1e-3, momentum=0.9, steps=25, loss=loss)
    bounds.train_stacked(together, x, y, [50, 30], [11, 12], **options)
    for m, (single, n, seed) in enumerate(zip(alone, [50, 30], [11, 12], strict=False)):
        bounds.train_stacked(single, x[m:m + 1], y[m:m + 1], [n], [seed], **options)
        for p, q in zip(single.parameters(), together.parameters(), strict=True):
            assert torch.allclose(p[0], q[m], atol=1e-5)
    with pytest.raises(ValueError, match="one size"):
        bounds.train_stacked(together, x, y, [50], [1], **options)


def test_replace_labels_keeps_the_rest_and_replaces_about_the_fraction():
    labels = torch.zeros(20_000, dtype=torch.long)
    noisy = bounds.replace_labels(labels, 0.3, 10, seed=1)
    # a replaced label is wrong with probability 9/10: about 0.27 of all labels change
    assert abs(float((noisy != 0).float().mean()) - 0.27) < 0.01
    assert torch.equal(bounds.replace_labels(labels, 0.0, 10, seed=1), labels)
    with pytest.raises(ValueError, match="fraction"):
        bounds.replace_labels(labels, 1.0, 10, seed=1)


def test_code_formula_by_hand_and_the_omitted_readout_factor():
    """The public code's formula by hand; it omits sqrt(P) of a dense read-out: 5 on 8x8, 25 on 28x28."""
    value = bounds.code_formula_bound(3.0, [4, 4, 4, 25], [2, 2, 2], 16.0, 100, 1, 0.01)
    complexity = 4.0 / 100 * 2**1.5 * (1 + math.sqrt(2 * 4 * math.log(50))) * 4.0 * 8
    assert value == pytest.approx(complexity + 3 * math.sqrt(math.log(2 * 25 / 0.01) / 200))
    assert bounds.readout_factor([4, 4, 4, 25], [2, 2, 2]) == pytest.approx(5.0)
    assert bounds.readout_factor([4, 4, 4, 625], [2, 2, 2]) == pytest.approx(25.0)
    assert bounds.readout_factor([4, 4, 4, 1], [2, 2, 2]) == pytest.approx(1.0)


def test_comparative_first_term_counts_pairs_by_brute_force():
    assert bounds.comparative_first_term([3, 4, 5], [9, 4, 2], layers=10) == pytest.approx(2 / 3)
    assert bounds.comparative_first_term([3, None], [None, None], layers=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pair"):
        bounds.comparative_first_term([3], [], layers=10)


def _row(term, gap, train=0.0):
    return {"term": term, "gap": gap, "train error": train}


def test_tracking_flags_and_ratios_on_a_hand_made_sweep():
    """Two seeds; seed 0 tracks everywhere, seed 1's term falls with noise. Oracles: the values by hand and
    scipy's Spearman on the same lists."""
    from scipy.stats import spearmanr

    sweep = {(250, 32, 0.0): [_row(10, 0.3), _row(10, 0.3)], (1000, 32, 0.0): [_row(12, 0.2), _row(12, 0.2)],
             (4000, 32, 0.0): [_row(5, 0.1, 0.07), _row(6, 0.12, 0.05)],
             (1000, 8, 0.0): [_row(8, 0.1), _row(13, 0.1)],
             (1000, 32, 0.2): [_row(20, 0.3), _row(11, 0.3)], (1000, 32, 0.4): [_row(30, 0.4), _row(9, 0.4)]}
    track = bounds.tracking(sweep, [250, 1000, 4000])
    assert track["noise_term_rises"] == [True, False] and track["noise_gap_rises"] == [True, True]
    assert track["width_term_rises"] == [True, False] and track["width_gap_rises"] == [True, True]
    assert track["n_gap_falls"] == [True, True]
    assert track["term_ratio_n"] == pytest.approx([0.5, 0.6]) and track["train_error_largest_n"] == [0.07, 0.05]
    keys = list(sweep)
    expected = spearmanr([sweep[c][1]["term"] for c in keys], [sweep[c][1]["gap"] for c in keys])[0]
    assert track["spearman_term_gap"][1] == pytest.approx(expected)
    assert track["spearman_n_term"] == pytest.approx([-0.5, -0.5])


def test_depth_summary_counts_unseparated_networks_as_one_layer_deeper():
    run = lambda noise, seed, depth, error, cdnv: {"noise": noise, "seed": seed, "depth": depth,  # noqa: E731
                                                  "test error": error, "cdnv": [1.0, cdnv]}
    runs = {6: [run(0.0, 0, 3, 0.02, 0.1), run(0.0, 1, 5, 0.03, 0.2), run(0.1, 0, None, 0.5, 0.3),
                run(0.1, 1, 4, 0.5, 0.4), run(0.3, 0, None, 0.6, 0.5), run(0.3, 1, None, 0.6, 0.35)]}
    s = bounds.depth_summary(runs)[6]
    assert s["clean depths"] == [3, 5] and s["clean test errors"] == [0.02, 0.03]
    low, high = s["noisy"]["0.1"], s["noisy"]["0.3"]
    assert low["depths"] == [7, 4] and low["first term"] == 0.5 and low["estimate"] == pytest.approx(0.6)
    assert high["depths"] == [7, 7] and high["first term"] == 0.0 and high["estimate"] == pytest.approx(0.3)
    assert low["last cdnv"] == [0.3, 0.4]
    assert s["cdnv rises with noise"] == [True, False]  # seed 1: 0.2 < 0.4 but 0.4 > 0.35


def test_gap_sweep_keeps_the_order_and_the_term_is_the_margin_complexity():
    teacher = lambda n, k=0: teacher_tree_images(n, seed=n + 10 * k)  # noqa: E731
    test = teacher_tree_images(50, seed=99)
    conditions = [(40, 4, 0.0), (20, 2, 0.0), (20, 4, 0.3)]
    sweep = bounds.gap_sweep(teacher, test, conditions, 2, steps=3, seed=0)
    assert list(sweep) == conditions and all(len(rows) == 2 for rows in sweep.values())
    for (n, _, _), rows in sweep.items():
        for r in rows:
            assert r["n"] == n and r["term"] == pytest.approx(2 / 0.5 * r["sparse"])
            assert r["gap"] == pytest.approx(r["test error"] - r["train error"])


def test_conv_student_reports_c1_and_the_code_formula_on_the_same_network():
    x, y = teacher_tree_images(64, seed=2)
    xt, yt = teacher_tree_images(32, seed=3)
    from theorylab.data import Split

    row = bounds.conv_student("overlap", 4, Split(x, y, xt, yt), n_outputs=1, steps=2, lr=0.01, seed=0)
    assert row["grs"] / row["sparse"] == pytest.approx(row["c1"]["total"], rel=1e-12)
    assert row["readout factor"] == 5
    energies = bounds.pixel_energies(x)
    assert row["code bound"] == pytest.approx(bounds.code_formula_bound(
        row["rho"], (4, 4, 4, 25), (2, 2, 2), energies.max(), 64, 1, 0.01))


def test_sweep_prose_numbers_and_spearman_text_by_hand():
    def rows(terms, rhos=(1, 1), gaps=(0.1, 0.1), train=(0.0, 0.0)):
        return [{"term": t, "rho": r, "gap": g, "train error": e} for t, r, g, e in zip(terms, rhos, gaps, train, strict=True)]

    sweep = {(250, 32, 0.0): rows((300, 400), rhos=(30, 40), gaps=(0.3, 0.2)),
             (1000, 32, 0.0): rows((500, 500), rhos=(100, 100)),
             (4000, 32, 0.0): rows((200, 200), rhos=(80, 90), gaps=(0.05, 0.05)),
             (1000, 8, 0.0): rows((250, 350), train=(0.03, 0.05))}
    summary = {10: {"clean last cdnv": [0.1, 0.1], "clean test errors": [0.02, 0.03],
                    "noisy": {"0.25": {"last cdnv": [0.2, 0.25]}, "0.1": {"last cdnv": [0.15, 0.2]}}}}
    v = bounds.sweep_prose_numbers(sweep, [250, 1000, 4000], summary)
    assert (v["term_small_n"], v["term_mid_n"], v["term_large_n"]) == (350, 500, 200)
    assert (v["rho_small_n"], v["rho_large_n"]) == (35, 85)
    assert abs(v["gap_fall_n"] - 5) < 1e-12
    assert (v["width8_train_min"], v["width8_train_max"]) == (0.03, 0.05)
    assert v["width_diff_over_spread"] == 2.0  # (500 - 300) / 100
    assert abs(v["cdnv_margin_min"] - 0.05) < 1e-12 and abs(v["cdnv_margin_max"] - 0.05) < 1e-12
    assert v["clean_error_min"] == 0.02
    assert bounds.spearman_text([-0.5, -0.5, -0.5]) == "-0.5 on every seed"
    assert bounds.spearman_text([0.8, 0.9]) == "between 0.8 and 0.9 over seeds"


# teacher_tree_images -------------------------------------------------------------------------------------------------


def test_teacher_tree_images_shapes_binary_labels_and_balance():
    n = 1000
    x, y = teacher_tree_images(n, size=8, channels=2, seed=0, teacher_seed=0, n_reference=1000)
    assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.tolist()) <= {0, 1}
    # labels split at the reference median: the fraction of ones is 1/2 up to the binomial error of the sample
    # and of the median's quantile (each SE sqrt(1/4/1000)); 5 combined standard errors
    assert abs(float(y.float().mean()) - 0.5) < 5 * math.sqrt(2 * 0.25 / 1000)


def test_teacher_tree_images_images_depend_on_seed_and_labels_on_teacher_seed():
    x0, y0 = teacher_tree_images(200, channels=2, seed=0, teacher_seed=0, n_reference=500)
    x1, y1 = teacher_tree_images(200, channels=2, seed=0, teacher_seed=1, n_reference=500)
    x2, _ = teacher_tree_images(200, channels=2, seed=1, teacher_seed=0, n_reference=500)
    again = teacher_tree_images(200, channels=2, seed=0, teacher_seed=0, n_reference=500)
    assert torch.equal(x0, again[0]) and torch.equal(y0, again[1])
    assert torch.equal(x0, x1) and not torch.equal(y0, y1)
    assert not torch.equal(x0, x2)
    # pixels are i.i.d. N(0, 1): mean of 12800 has SE 1/sqrt(12800), allow 5
    assert abs(float(x0.mean())) < 5 / math.sqrt(x0.numel())


def test_teacher_tree_images_rejects_non_positive_count_with_value_error():
    with pytest.raises(ValueError):
        teacher_tree_images(0)


def test_mean_last_cdnv_by_noise_orders_noise_levels_numerically_not_as_text():
    entry = {"clean last cdnv": [0.1, 0.3], "noisy": {"0.25": {"last cdnv": [0.5, 0.7]},
                                                      "0.1": {"last cdnv": [0.2, 0.4]}}}
    assert bounds.mean_last_cdnv_by_noise(entry) == pytest.approx([0.2, 0.3, 0.6])



@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("depth", [3, 8])
def test_conv_lh_shapes_degrees_and_parameter_count_by_arithmetic(size, depth):
    """Each 2x2 stride-1 layer shrinks the map by one: P_l = (s - l)^2, read-out degree (s - L)^2; parameters
    4 c_in H + 4 H^2 (L - 1) + H (s - L)^2 k (no biases)."""
    channels, k, c_in = 3, 10, 1 if size == 28 else 3
    model = bounds.conv_lh(depth, channels, size, in_channels=c_in, n_outputs=k)
    arch = bounds.architecture(model, (c_in, size, size))
    assert arch.degrees == (4,) * depth + ((size - depth) ** 2,)
    assert arch.output_positions == tuple((size - layer) ** 2 for layer in range(1, depth + 1)) + (1,)
    expected = 4 * c_in * channels + 4 * channels**2 * (depth - 1) + channels * (size - depth) ** 2 * k
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.zeros(2, c_in, size, size)).shape == (2, k)
    with pytest.raises(ValueError, match="depth"):
        bounds.conv_lh(size, channels, size)


def test_conv_lh_is_positively_homogeneous():
    """Bias-free ReLU layers: f(c x) = c f(x) for every c > 0 (float64)."""
    torch.manual_seed(0)
    model = bounds.conv_lh(4, 5, 12, in_channels=2, n_outputs=3).double()
    x = torch.randn(6, 2, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        for c in (0.25, 1.0, 3.7, 100.0):
            assert torch.allclose(model(c * x), c * model(x), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(model(-x), -model(x))  # ReLU: not odd, so homogeneity is only for c > 0


def test_pixel_energies_in_torch_match_numpy_by_loops():
    x = torch.randn(7, 2, 3, 4)
    brute = np.array([[sum(float(x[i, c, a, b]) ** 2 for i in range(7) for c in range(2)) for b in range(4)]
                      for a in range(3)]).ravel()
    assert np.allclose(bounds.pixel_energies_torch(x, chunk=3), brute, rtol=1e-12)
    assert np.allclose(bounds.pixel_energies(x), brute, rtol=1e-6)


def test_measure_network_against_brute_force_on_a_tiny_conv_lh():
    """T2 and GRS from quantities computed independently: filter norms by summing squares, in-degrees by
    counting the input positions each output position of the explicit dense operator reads, Toeplitz norms
    from those operators, pixel energies by loops; errors by counting wrong argmax predictions one by one."""
    torch.manual_seed(3)
    size, c_in, k, n = 6, 2, 3, 9
    model = bounds.conv_lh(2, 3, size, in_channels=c_in, n_outputs=k).double()
    x, x_test = torch.randn(n, c_in, size, size, dtype=torch.float64), torch.randn(5, c_in, size, size, dtype=torch.float64)
    y, y_test = torch.randint(0, k, (n,)), torch.randint(0, k, (5,))
    from theorylab.data import Split
    row = bounds.measure_network(model, Split(x, y, x_test, y_test), batch=4)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    shape, degrees, rho, rho_dense = (c_in, size, size), [], 1.0, 1.0
    for conv in convs:
        dense = bounds.dense_operator(conv, shape)
        out_shape = (conv.out_channels, shape[1] - conv.kernel_size[0] + 1, shape[2] - conv.kernel_size[1] + 1)
        reads = dense.reshape(*out_shape, *shape) != 0  # (out c, out h, out w, in c, in h, in w)
        degrees.append(max(int(reads[:, a, b].any(axis=(0, 1)).sum()) for a in range(out_shape[1])
                           for b in range(out_shape[2])))
        rho *= math.sqrt(sum(float(w) ** 2 for w in conv.weight.detach().flatten()))
        rho_dense *= float(np.linalg.norm(dense))
        shape = out_shape
    energies = [sum(float(x[i, :, a, b].pow(2).sum()) for i in range(n)) for a in range(size) for b in range(size)]
    log_k = math.log(k) + (len(degrees) - 1) * math.log(2) + sum(math.log(d) for d in degrees)
    sparse = rho * math.prod(math.sqrt(d) for d in degrees) * math.sqrt(max(energies)) / n * (1 + math.sqrt(2 * log_k))
    grs = rho_dense * math.sqrt(sum(energies)) / n * (1 + math.sqrt(2 * (len(degrees) * math.log(2) + math.log(k))))
    assert degrees == [4, 4, 16] and row["depth"] == 2
    assert row["sparse"] == pytest.approx(sparse, rel=1e-10) and row["grs"] == pytest.approx(grs, rel=1e-10)
    with torch.no_grad():
        wrong = [int(model(x[i:i + 1])[0].argmax()) != int(y[i]) for i in range(n)]
        wrong_test = [int(model(x_test[i:i + 1])[0].argmax()) != int(y_test[i]) for i in range(5)]
    assert row["train error"] == pytest.approx(sum(wrong) / n)
    assert row["gap"] == pytest.approx(sum(wrong_test) / 5 - sum(wrong) / n)


def test_subsample_sizes_determinism_and_whole_set():
    from theorylab.data import Split
    split = Split(torch.arange(20.0)[:, None], torch.arange(20), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    small = bounds.subsample(split, 7, seed=1)
    assert len(small.y_train) == 7 and len(set(small.y_train.tolist())) == 7
    assert torch.equal(small.x_train[:, 0].long(), small.y_train)  # images and labels stay paired
    assert torch.equal(bounds.subsample(split, 7, seed=1).y_train, small.y_train)
    assert bounds.subsample(split, 20, seed=1) is split and bounds.subsample(split, 10**6, seed=0) is split


def test_train_conv_lh_learns_an_easy_task_and_reports_its_protocol():
    """Classes told apart by the sign of the mean pixel: a few epochs reach a low training error; the row
    counts ceil(n / batch) steps per epoch and its gap is test minus training error."""
    from theorylab.data import Split
    generator = torch.Generator().manual_seed(0)
    def images(m):
        y = torch.randint(0, 2, (m,), generator=generator)
        return torch.randn(m, 1, 6, 6, generator=generator) * 0.3 + (2.0 * y - 1)[:, None, None, None], y
    split = Split(*images(80), *images(40))
    row = bounds.train_conv_lh(split, 2, 4, n=64, epochs=20, seed=0, lr=0.1)
    assert row["n"] == 64 and row["steps"] == 20 * 2 and row["epochs"] == 20
    assert row["train error"] < 0.1 and row["gap"] == pytest.approx(row["test error"] - row["train error"])
    assert row["sparse"] < row["grs"] and row["arch"].degrees == (4, 4, 16)


def test_paper_sweep_keys_checkpoint_names_and_one_load_per_data_set():
    from theorylab.data import Split
    generator = torch.Generator().manual_seed(0)
    def load(name):
        loaded.append(name)
        return Split(torch.randn(12, 1, 5, 5, generator=generator), torch.arange(12) % 3,
                     torch.randn(6, 1, 5, 5, generator=generator), torch.arange(6) % 3)
    loaded, names = [], []
    def checkpoint(name, compute):
        names.append(name)
        return compute()
    runs = bounds.paper_sweep(load, ("a", "b"), (1, 2), (4, 100), width=2, epochs=1, seed=0, checkpoint=checkpoint)
    # n = 100 asks for more than the 12 images there are: the run uses, and is keyed by, all 12
    assert loaded == ["a", "b"] and list(runs) == [(d, L, n) for d in "ab" for L in (1, 2) for n in (4, 12)]
    assert names == [f"paper-{d}-{L}-{n}" for d, L, n in runs]
    assert [r["n"] for r in runs.values()] == [4, 12] * 4 and [r["depth"] for r in runs.values()] == [1, 1, 2, 2] * 2


def test_conv_lh_with_the_paper_settings_learns_in_its_first_epoch():
    # the paper's rate, momentum, decay and batch on 28x28 stand-in images: a loss that kills the
    # ReLUs (summed squared error to +-1) leaves accuracy at chance; the public code's does not
    from theorylab import data
    split = data.public_images("mnist", smoke=True, smoke_sizes=(600, 100), seed=0)
    row = bounds.train_conv_lh(split, 3, 32, n=600, epochs=1, seed=0)
    assert row["train error"] < 0.5, row["train error"]


def test_to_device_and_teacher_samples_keep_the_values():
    from theorylab.data import Split
    split = Split(torch.ones(2, 1), torch.zeros(2, dtype=torch.long), torch.ones(1, 1), torch.zeros(1, dtype=torch.long))
    moved = bounds.to_device(split, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(vars(moved).values(), vars(split).values(), strict=True))
    x, y = bounds.teacher_samples(4, "cpu")(50, 1)
    x0, y0 = teacher_tree_images(50, seed=4 + 50 + 7919)
    assert torch.equal(x, x0) and torch.equal(y, y0)
