r"""Norm-based generalization bounds for compositionally sparse networks, and effective depth
(chapter ``sparse-network-bounds``, after Galanti, Xu, Galanti and Poggio, NeurIPS 2023, and Galanti,
Galanti and Ben-Shaul, TMLR 2023).

A sparse network here is a stack of bias-free ``nn.Conv2d`` layers without padding, each followed by ReLU
except the last (the read-out, whose kernel covers the whole remaining map, so it has one position).
Layer :math:`l`'s in-degree is its kernel area :math:`\deg_l`; its Toeplitz (dense) operator has Frobenius
norm :math:`\sqrt{P^{\rm out}_l}\|w_l\|_F` (L1). The sparse bound (T2) multiplies filter norms and
:math:`\sqrt{\deg_l}` and reads the data through the busiest pixel's energy; the Golowich-Rakhlin-Shamir
bound (T1) multiplies Toeplitz norms and reads the whole sample's energy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .collapse import cdnv, ncc_predict


# ----------------------------------------------------------------------------------------------
# Architecture


def sparse_layers(model: nn.Module) -> list[nn.Conv2d]:
    """The model's convolutions, checked: bias-free, unpadded, undilated, no pooling or normalisation."""
    for module in model.modules():
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm2d, nn.Linear)):
            raise ValueError(f"{type(module).__name__} is not allowed: the bounds need bias-free convolutions and ReLU only")
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        raise ValueError("the model has no sparse (convolutional) layer")
    for layer in layers:
        if layer.bias is not None:
            raise ValueError("a convolution has a bias: the bounds need positively homogeneous, bias-free layers")
        if any(p != 0 for p in layer.padding) or any(d != 1 for d in layer.dilation) or layer.groups != 1:
            raise ValueError("padding, dilation and groups are not supported (L1 is exact only without padding)")
    return layers


@dataclass(frozen=True)
class Architecture:
    """In-degree, output positions and filter norm of every layer (read-out last)."""

    degrees: tuple[int, ...]
    output_positions: tuple[int, ...]
    filter_norms: tuple[float, ...]
    n_outputs: int

    @property
    def depth(self) -> int:
        return len(self.degrees)

    @property
    def filter_norm_product(self) -> float:
        r""":math:`\rho(f)=\prod_l\|w_l\|_F` over filters."""
        return float(np.prod(self.filter_norms))

    @property
    def toeplitz_norm_product(self) -> float:
        r""":math:`\prod_l\|T(w_l)\|_F=\prod_l\sqrt{P^{\rm out}_l}\|w_l\|_F` (L1)."""
        return float(np.prod([math.sqrt(p) * w for p, w in zip(self.output_positions, self.filter_norms, strict=True)]))


def architecture(model: nn.Module, input_shape: Sequence[int]) -> Architecture:
    """:class:`Architecture` of ``model`` on inputs of shape ``(channels, height, width)``."""
    layers = sparse_layers(model)
    height, width = input_shape[1], input_shape[2]
    degrees, positions, norms = [], [], []
    for layer in layers:
        kh, kw = layer.kernel_size
        sh, sw = layer.stride
        height, width = (height - kh) // sh + 1, (width - kw) // sw + 1
        if height < 1 or width < 1:
            raise ValueError(f"input shape {tuple(input_shape)} is too small for the model")
        degrees.append(kh * kw)
        positions.append(height * width)
        norms.append(float(layer.weight.detach().double().norm()))
    if positions[-1] != 1:
        raise ValueError("the read-out must cover the whole map (one output position)")
    return Architecture(tuple(degrees), tuple(positions), tuple(norms), layers[-1].out_channels)


def architecture_factors(image_size: int, layers: int, stride: int, kernel: int = 2) -> dict[str, float]:
    r"""C1's architecture factors by arithmetic: Toeplitz :math:`\prod_{\rm conv}\sqrt{P^{\rm out}_l}` and sparse
    :math:`\prod_l\sqrt{\deg_l}` (read-out included: degree 1 after a tree, the remaining map after stride 1)."""
    size, toeplitz, sparse = image_size, 1.0, 1.0
    for _ in range(layers):
        size = (size - kernel) // stride + 1
        if size < 1:
            raise ValueError(f"{layers} layers do not fit a {image_size}x{image_size} image")
        toeplitz *= size
        sparse *= kernel
    sparse *= size  # the read-out's degree is the remaining map, size^2, whose square root is size
    return {"toeplitz": toeplitz, "sparse": sparse, "ratio": toeplitz / sparse}


def dense_operator(layer: nn.Conv2d, input_shape: Sequence[int]) -> np.ndarray:
    """The explicit (Toeplitz) matrix of a convolution, column by column from basis images (for tests)."""
    size = int(np.prod(input_shape))
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *input_shape)
    with torch.no_grad():
        weight = layer.weight.detach().double()
        out = torch.nn.functional.conv2d(basis, weight, stride=layer.stride)
    return out.reshape(size, -1).T.numpy()


def sparse_cnn(kind: str, channels: int, n_outputs: int = 1, image_size: int = 8, in_channels: int = 1) -> nn.Sequential:
    """Bias-free students on ``image_size`` x ``image_size`` images: ``tree`` (2x2 stride-2 convolutions down to
    one position, read-out of degree 1) or ``overlap`` (three 2x2 stride-1 convolutions, a dense read-out over
    the remaining map)."""
    layers: list[nn.Module] = []
    size, previous = image_size, in_channels
    if kind == "tree":
        while size > 1:
            if size % 2:
                raise ValueError(f"tree networks need a power-of-two image size, got {image_size}")
            layers += [nn.Conv2d(previous, channels, 2, stride=2, bias=False), nn.ReLU()]
            size, previous = size // 2, channels
    elif kind == "overlap":
        for _ in range(3):
            layers += [nn.Conv2d(previous, channels, 2, stride=1, bias=False), nn.ReLU()]
            size, previous = size - 1, channels
    else:
        raise ValueError(f"kind: got {kind!r}, expected 'tree' or 'overlap'")
    layers += [nn.Conv2d(previous, n_outputs, size, bias=False), nn.Flatten()]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------
# Bounds


def pixel_energies(inputs: np.ndarray | torch.Tensor) -> np.ndarray:
    r""":math:`E_j=\sum_i\|x_i[j]\|^2` for every pixel :math:`j` (channels summed), inputs ``(n, c, h, w)``."""
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"inputs: expected a non-empty (n, channels, height, width) array, got shape {x.shape}")
    return (x**2).sum(axis=(0, 1)).ravel()


def sparse_rademacher_bound(rho: float, degrees: Sequence[int], max_pixel_energy: float, n: int, n_outputs: int = 1) -> float:
    r"""T2: :math:`\frac{\rho\prod_l\sqrt{\deg_l}\,a_S}{n}(1+\sqrt{2\log K})`, :math:`a_S=\sqrt{\max_jE_j}`,
    :math:`K=k\,2^{L-1}\prod_l\deg_l`."""
    if n < 1:
        raise ValueError("n: the sample is empty")
    L = len(degrees)
    log_k = math.log(n_outputs) + (L - 1) * math.log(2) + sum(math.log(d) for d in degrees)
    return rho * math.prod(math.sqrt(d) for d in degrees) * math.sqrt(max_pixel_energy) / n * (1 + math.sqrt(2 * log_k))


def grs_rademacher_bound(rho_dense: float, depth: int, total_energy: float, n: int, n_outputs: int = 1) -> float:
    r"""T1 (Golowich, Rakhlin, Shamir): :math:`\frac{\prod_l\|T_l\|_F\sqrt{\sum_i\|x_i\|^2}}{n}(1+\sqrt{2(L\log2+\log k)})`."""
    if n < 1:
        raise ValueError("n: the sample is empty")
    return rho_dense * math.sqrt(total_energy) / n * (1 + math.sqrt(2 * (depth * math.log(2) + math.log(n_outputs))))


def bound_ratio(arch: Architecture, energies: np.ndarray) -> dict[str, float]:
    r"""C1: GRS over sparse, as the product of an architecture factor
    :math:`\prod_{\rm conv}\sqrt{P^{\rm out}_l}/\prod_l\sqrt{\deg_l}`, an input factor :math:`\sqrt{\sum_jE_j/\max_jE_j}`
    and a log factor."""
    architecture_factor = math.prod(math.sqrt(p) for p in arch.output_positions) / math.prod(math.sqrt(d) for d in arch.degrees)
    input_factor = math.sqrt(energies.sum() / energies.max())
    L, k = arch.depth, arch.n_outputs
    log_k = math.log(k) + (L - 1) * math.log(2) + sum(math.log(d) for d in arch.degrees)
    log_factor = (1 + math.sqrt(2 * (L * math.log(2) + math.log(k)))) / (1 + math.sqrt(2 * log_k))
    return {"architecture": architecture_factor, "input": input_factor, "log": log_factor,
            "total": architecture_factor * input_factor * log_factor}


def margin_bound(complexity: callable, rho: float, margins: np.ndarray, gamma: float, delta: float) -> dict[str, float]:
    r"""T3 for binary tasks, made data-dependent over :math:`\rho\in\{2^j\}_{j\ge1}` with :math:`\delta_j=\delta2^{-j}`:
    :math:`\Pr[yf(x)\le0]\le\frac1n\sum_i\mathbf 1[y_if(x_i)<\gamma]+\frac2\gamma\hat{\mathfrak R}_S(\mathcal F_{2^j})
    +3\sqrt{\log(2^{j+1}/\delta)/(2n)}`, :math:`j=\max(1,\lceil\log_2\rho\rceil)`; ``complexity(r)`` is
    :math:`\hat{\mathfrak R}_S(\mathcal F_r)`."""
    margins = np.asarray(margins, dtype=np.float64)
    if margins.size == 0:
        raise ValueError("margin_bound: the sample is empty")
    if not 0 < delta < 1:
        raise ValueError(f"delta: got {delta}, expected a confidence in (0, 1)")
    if gamma <= 0:
        raise ValueError(f"gamma: got {gamma}, expected a positive margin")
    j = max(1, math.ceil(math.log2(rho))) if rho > 0 else 1
    empirical = float(np.mean(margins < gamma))
    rademacher = 2 / gamma * complexity(2.0**j)
    confidence = 3 * math.sqrt(math.log(2 ** (j + 1) / delta) / (2 * margins.size))
    return {"empirical margin loss": empirical, "complexity": rademacher, "confidence": confidence,
            "bound": empirical + rademacher + confidence, "rho grid": 2.0**j}


def code_formula_bound(rho: float, degrees: Sequence[int], kernel_sides: Sequence[int], max_pixel_energy: float, n: int,
                       n_outputs: int, delta: float) -> float:
    r"""The formula of the paper's public code (lianegalanti/gen ``utils.py``), labelled as such:
    :math:`\frac{\rho+1}n2^{3/2}(1+\sqrt{2(L\log(2\max\deg)+\log k)})\sqrt{\max_jE_j}\prod_lk_l`
    :math:`+3\sqrt{\log(2(\rho+2)^2/\delta)/(2n)}`,
    with :math:`k_l` the convolutions' kernel sides (the read-out's degree is not counted)."""
    L = len(degrees)
    complexity = (rho + 1) / n * 2**1.5 * (1 + math.sqrt(2 * (L * math.log(2 * max(degrees)) + math.log(n_outputs))))
    confidence = 3 * math.sqrt(math.log(2 * (rho + 2) ** 2 / delta) / (2 * n))
    return complexity * math.sqrt(max_pixel_energy) * math.prod(kernel_sides) + confidence


# ----------------------------------------------------------------------------------------------
# Effective depth


def layerwise_features(model: nn.Sequential, inputs: torch.Tensor) -> list[np.ndarray]:
    """The input and the output of every ReLU of a sequential model, flattened: :math:`h_0=x,h_1,\\dots,h_D`."""
    features = [inputs.flatten(1).double().numpy()]
    h = inputs
    with torch.no_grad():
        for module in model:
            h = module(h)
            if isinstance(module, nn.ReLU):
                features.append(h.flatten(1).double().numpy())
    return features


def ncc_train_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the nearest-class-centre rule with centres from the same samples (NCC training accuracy)."""
    classes = np.unique(labels)
    centres = np.array([features[labels == c].mean(axis=0) for c in classes])
    return float(np.mean(classes[ncc_predict(centres, features)] == labels))


def effective_depth(accuracies: Sequence[float], eps: float) -> int | None:
    r""":math:`d_\varepsilon=\min\{l:\ \text{NCC training error of }h_l\le\varepsilon\}` (None if no layer reaches it)."""
    if not 0 <= eps < 1:
        raise ValueError(f"eps: got {eps}, expected [0, 1)")
    return next((layer for layer, accuracy in enumerate(accuracies) if 1 - accuracy <= eps), None)


def layer_cdnv(features: list[np.ndarray], labels: np.ndarray) -> list[float]:
    """CDNV (the Galanti-Gyorgy-Hutter convention of ``theorylab.collapse``) of every layer's features."""
    return [cdnv(f, labels) for f in features]
