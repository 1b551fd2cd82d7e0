"""The papers' image networks: sizes against published parameter counts, shapes, and structure."""
import pytest
import torch
from torch import nn

from theorylab import models


def test_resnet18_has_the_cifar_resnet18_parameter_count():
    # 11,173,962: the CIFAR ResNet-18 (3x3 stem, no max-pool) of the common reference implementations
    assert models.parameter_count(models.resnet18(10)) == 11_173_962


def test_vgg16_matches_the_reference_count_less_the_convolution_biases():
    # 14,728,266 with a bias in each of the 13 convolutions; batch norm makes them redundant, so they
    # are left out: 64*2 + 128*2 + 256*3 + 512*6 = 4,224 fewer
    assert models.parameter_count(models.vgg16(10)) == 14_728_266 - 4_224


def test_mlp_bn_wn_count_by_hand():
    depth, width, d, k = 4, 7, 12, 3
    hidden = (d * width + width + width) + 2 * (width * width + width + width)  # V, bias, g per layer
    batch_norm = 3 * 2 * width
    assert models.parameter_count(models.mlp_bn_wn(d, k, width, depth)) == hidden + batch_norm + width * k + k


@pytest.mark.parametrize("build,shape", [
    (lambda: models.resnet18(7, 3, width=4), (5, 3, 32, 32)),
    (lambda: models.resnet18(7, 1, width=4, head=(9,)), (5, 1, 28, 28)),
    (lambda: models.vgg16(7, 3, width=2), (5, 3, 32, 32)),
    (lambda: models.mlp_bn_wn(3 * 32 * 32, 7, width=5, depth=3), (5, 3, 32, 32)),
])
def test_networks_map_images_to_class_scores(build, shape):
    torch.manual_seed(0)
    model = build()
    assert model(torch.randn(shape)).shape == (5, 7)
    assert isinstance(model.head[-1], nn.Linear) and model.head[-1].out_features == 7


def test_resnet18_head_widths_and_feature_dimension():
    model = models.resnet18(10, width=4, head=(16,))
    features = model.pool(model.features(torch.randn(2, 3, 32, 32)))
    assert features.shape == (2, 32)  # 8 * width
    assert [m.out_features for m in model.head if isinstance(m, nn.Linear)] == [16, 10]


@pytest.mark.parametrize("build", [lambda: models.resnet18(width=0), lambda: models.vgg16(n_classes=True),
                                   lambda: models.mlp_bn_wn(10, depth=1)])
def test_bad_sizes_are_named(build):
    with pytest.raises(ValueError):
        build()
