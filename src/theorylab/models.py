"""The papers' image networks, for the ``full`` profiles: CIFAR-style ResNet-18 and VGG-16, and the
rank paper's MLP with batch and weight normalisation.

Each takes a ``width`` (channels of the first stage; the papers' is 64) so that ``--smoke`` runs and
unit tests build the same architecture at a fraction of its size.
"""
from __future__ import annotations

from torch import nn

from .validation import positive_int


class BasicBlock(nn.Module):
    r"""Two 3x3 convolutions with batch norm and a shortcut: :math:`\mathrm{relu}(F(x) + S(x))`, where
    :math:`S` is the identity, or a strided 1x1 convolution with batch norm when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x):
        return nn.functional.relu(self.residual(x) + self.shortcut(x))


def resnet18(n_classes: int = 10, in_channels: int = 3, width: int = 64,
             head: tuple[int, ...] = ()) -> nn.Sequential:
    """ResNet-18 for 32x32 inputs (He et al. 2016, in the CIFAR form: a 3x3 stem without max-pooling),
    stages of ``width * (1, 2, 4, 8)`` channels with two :class:`BasicBlock` each, global average
    pooling, then a linear read-out, or ``head`` hidden widths with ReLU before it (the canonical
    representation paper's two-layer head is ``head=(width * 8,)``).

    Layers are named: ``model.features`` (stem and stages), ``model.pool``, ``model.head``."""
    n_classes, in_channels, width = (positive_int(k, v) for k, v in
                                     (("n_classes", n_classes), ("in_channels", in_channels), ("width", width)))
    stages, channels = [], width
    for k, factor in enumerate((1, 2, 4, 8)):
        out = width * factor
        stages += [BasicBlock(channels, out, stride=1 if k == 0 else 2), BasicBlock(out, out)]
        channels = out
    stem = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    widths = (channels, *head, n_classes)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(_named(features=nn.Sequential(*stem, *stages),
                                pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                                head=nn.Sequential(*layers)))


VGG16_PLAN = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M")
"""VGG-16's 13 convolutions in multiples of ``width`` (64, 128, 256, 512, 512), "M" a 2x2 max-pool."""


def vgg16(n_classes: int = 10, in_channels: int = 3, width: int = 64) -> nn.Sequential:
    """VGG-16 with batch norm for 32x32 inputs (Simonyan and Zisserman 2015, in the CIFAR form: the five
    pools leave a 1x1 map, read out by one linear layer of ``8 * width`` inputs)."""
    n_classes, in_channels, width = (positive_int(k, v) for k, v in
                                     (("n_classes", n_classes), ("in_channels", in_channels), ("width", width)))
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_PLAN:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, width * item, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width * item), nn.ReLU(inplace=True)]
            channels = width * item
    return nn.Sequential(_named(features=nn.Sequential(*layers), pool=nn.Flatten(),
                                head=nn.Sequential(nn.Linear(channels, n_classes))))


def mlp_bn_wn(input_dim: int, n_classes: int = 10, width: int = 100, depth: int = 10) -> nn.Sequential:
    r"""An MLP with weight and batch normalisation after the rank paper's: ``depth`` linear layers, each
    hidden one weight-normalised (:math:`W = g\,V/\lVert V\rVert` row-wise, PyTorch's ``weight_norm``)
    and followed by batch norm and ReLU; input flattened; the last layer a plain linear read-out. (The
    paper's public ``mlp_wn`` normalises each matrix as a whole, has no batch norm and uses leaky ReLU.)"""
    input_dim, n_classes, width, depth = (positive_int(k, v) for k, v in (
        ("input_dim", input_dim), ("n_classes", n_classes), ("width", width), ("depth", depth)))
    if depth < 2:
        raise ValueError(f"depth: got {depth}, expected at least 2 (one hidden layer and the read-out)")
    from torch.nn.utils.parametrizations import weight_norm

    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = input_dim
    for _ in range(depth - 1):
        layers += [weight_norm(nn.Linear(fan_in, width)), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        fan_in = width
    return nn.Sequential(_named(features=nn.Sequential(*layers), pool=nn.Identity(),
                                head=nn.Sequential(nn.Linear(fan_in, n_classes))))


def _named(**parts: nn.Module):
    from collections import OrderedDict

    return OrderedDict(parts)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable scalars of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
