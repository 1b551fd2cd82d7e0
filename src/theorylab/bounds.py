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
        norms.append(float(layer.weight.detach().cpu().double().norm()))  # float64 on the host
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


def sparse_cnn(kind: str, channels: int, n_outputs: int = 1, image_size: int = 8, in_channels: int = 1,
               depth: int = 3) -> nn.Sequential:
    """Bias-free students on ``image_size`` x ``image_size`` images: ``tree`` (2x2 stride-2 convolutions down to
    one position, read-out of degree 1) or ``overlap`` (``depth`` 2x2 stride-1 convolutions, each shrinking the
    map by one, then a dense read-out over the remaining ``(image_size - depth)``-square map)."""
    layers: list[nn.Module] = []
    size, previous = image_size, in_channels
    if kind == "tree":
        while size > 1:
            if size % 2:
                raise ValueError(f"tree networks need a power-of-two image size, got {image_size}")
            layers += [nn.Conv2d(previous, channels, 2, stride=2, bias=False), nn.ReLU()]
            size, previous = size // 2, channels
    elif kind == "overlap":
        if not 1 <= depth < image_size:
            raise ValueError(f"depth: got {depth}, expected 1..{image_size - 1} for {image_size}x{image_size} images")
        for _ in range(depth):
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
    if isinstance(inputs, torch.Tensor) and inputs.device.type != "cpu":
        return pixel_energies_torch(inputs)
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"inputs: expected a non-empty (n, channels, height, width) array, got shape {x.shape}")
    return (x**2).sum(axis=(0, 1)).ravel()


def pixel_energies_torch(inputs: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    r""":math:`E_j=\sum_i\|x_i[j]\|^2` as :func:`pixel_energies`, summed in float64 where ``inputs`` live (in chunks
    of ``chunk`` images, so a whole data set on a GPU is never copied), one host copy at the end."""
    if inputs.ndim != 4 or inputs.shape[0] == 0:
        raise ValueError(f"inputs: expected a non-empty (n, channels, height, width) tensor, got {tuple(inputs.shape)}")
    total = torch.zeros(inputs.shape[2:], dtype=torch.float64, device=inputs.device)
    with torch.no_grad():
        for first in range(0, inputs.shape[0], chunk):
            total += (inputs[first:first + chunk].detach().double() ** 2).sum(dim=(0, 1))
    return total.cpu().numpy().ravel()


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
    features = [inputs.flatten(1).double().cpu().numpy()]
    h = inputs
    with torch.no_grad():
        for module in model:
            h = module(h)
            if isinstance(module, nn.ReLU):
                features.append(h.flatten(1).double().cpu().numpy())
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


# ----------------------------------------------------------------------------------------------
# Several students at once (seeds, sample sizes, label noise stacked along a leading model axis)


class StackedTree(nn.Module):
    r"""``models`` independent tree students (:func:`sparse_cnn` ``"tree"``) evaluated together.

    Layer :math:`l` of model :math:`m` maps every 2x2 block of channel vectors to
    :math:`\sigma(W^{(m)}_l\,\mathrm{vec}\,h[N(q)])`, with :math:`W^{(m)}_l\in\mathbb R^{c\times4c'}`; the read-out
    (degree 1) is linear. Inputs are ``(models, batch, channels, size, size)``, outputs ``(models, batch,
    n_outputs)``. Initialisation as PyTorch's ``Conv2d`` (uniform on :math:`\pm1/\sqrt{\text{fan-in}}`).
    :meth:`single` returns model :math:`m` as the equivalent ``nn.Sequential`` of convolutions."""

    def __init__(self, models: int, channels: int, n_outputs: int = 1, image_size: int = 8, in_channels: int = 1):
        super().__init__()
        if min(models, channels, n_outputs, in_channels) < 1 or image_size < 2 or image_size & (image_size - 1):
            raise ValueError(f"models, channels, n_outputs, in_channels must be positive and image_size a power of "
                             f"two >= 2; got {models}, {channels}, {n_outputs}, {in_channels}, {image_size}")
        shapes, previous, size = [], in_channels, image_size
        while size > 1:
            shapes.append((channels, 4 * previous))
            previous, size = channels, size // 2
        shapes.append((n_outputs, previous))
        self.weights = nn.ParameterList(
            nn.Parameter((torch.rand(models, out, fan_in) * 2 - 1) / math.sqrt(fan_in)) for out, fan_in in shapes)
        self.channels, self.n_outputs, self.image_size, self.in_channels = channels, n_outputs, image_size, in_channels

    @property
    def degrees(self) -> tuple[int, ...]:
        return (4,) * (len(self.weights) - 1) + (1,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, b = x.shape[:2]
        h = x.permute(0, 1, 3, 4, 2)  # channels last: (models, batch, height, width, channels)
        for weight in self.weights[:-1]:
            size, c = h.shape[2], h.shape[4]
            blocks = h.reshape(m, b, size // 2, 2, size // 2, 2, c).permute(0, 1, 2, 4, 3, 5, 6)
            h = torch.relu(torch.einsum("mbhwi,moi->mbhwo", blocks.reshape(m, b, size // 2, size // 2, 4 * c), weight))
        return torch.einsum("mbi,moi->mbo", h[:, :, 0, 0, :], self.weights[-1])

    def filter_norm_products(self) -> np.ndarray:
        r""":math:`\rho(f_m)=\prod_l\|W^{(m)}_l\|_F` for every model, float64."""
        norms = [w.detach().cpu().double().flatten(1).norm(dim=1) for w in self.weights]
        return torch.stack(norms).prod(dim=0).cpu().numpy()

    def single(self, index: int) -> nn.Sequential:
        """Model ``index`` as :func:`sparse_cnn` convolutions (weights copied, block order (row, col, channel))."""
        model = sparse_cnn("tree", self.channels, self.n_outputs, self.image_size, self.in_channels)
        convolutions = [layer for layer in model if isinstance(layer, nn.Conv2d)]
        with torch.no_grad():
            for layer, weight in zip(convolutions, self.weights, strict=True):
                out, c_in, kh, kw = layer.weight.shape
                layer.weight.copy_(weight[index].reshape(out, kh, kw, c_in).permute(0, 3, 1, 2))
        return model


class StackedMLP(nn.Module):
    """``models`` independent ReLU MLPs ``widths[0] -> ... -> widths[-1]`` with biases, Kaiming-normal weights
    (fan-in) and zero biases, as :func:`theorylab.training.mlp` with ``init="kaiming"``. Inputs ``(models, batch,
    widths[0])``; :meth:`features` gives :math:`h_0=x,h_1,\\dots,h_D` (post-ReLU) of every model."""

    def __init__(self, models: int, widths: Sequence[int]):
        super().__init__()
        if models < 1 or len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"models: got {models}, widths: got {list(widths)}; expected positive sizes, two at least")
        shapes = zip(widths, widths[1:], strict=False)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(models, out, fan_in) * math.sqrt(2 / fan_in)) for fan_in, out in shapes)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(models, out)) for out in widths[1:])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = x, [x]
        for weight, bias in zip(self.weights[:-1], self.biases[:-1], strict=False):
            h = torch.relu(torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2)))
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)[-1]
        return torch.baddbmm(self.biases[-1][:, None, :], h, self.weights[-1].transpose(1, 2))


def train_stacked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sizes: Sequence[int], seeds: Sequence[int], *,
                  batch: int, lr: float, wd: float, momentum: float, steps: int, loss: str) -> nn.Module:
    r"""SGD (PyTorch's, with momentum and weight decay) on the sum over models of each model's mean loss.

    Model :math:`m` sees its own training set ``x[m, :sizes[m]]``, ``y[m, :sizes[m]]`` and draws ``batch`` indices
    uniformly with replacement from a generator seeded with ``seeds[m]``. SGD, momentum and weight decay act
    element by element and the loss is a sum of one term per model, so each model follows exactly the
    trajectory it would follow alone (a unit test checks this). ``loss``: ``"squared"`` (one output, targets
    :math:`\pm1` for labels 1/0) or ``"cross_entropy"``."""
    models = x.shape[0]
    if not len(sizes) == len(seeds) == models == y.shape[0] or min(sizes) < 1 or max(sizes) > x.shape[1]:
        raise ValueError(f"need one size in [1, {x.shape[1]}] and one seed per model ({models}); "
                         f"got sizes {list(sizes)}, seeds {list(seeds)}")
    if loss not in ("squared", "cross_entropy") or min(batch, steps) < 1 or lr <= 0:
        raise ValueError(f"loss {loss!r}, batch {batch}, steps {steps}, lr {lr}: expected 'squared' or "
                         f"'cross_entropy' and positive batch, steps and rate")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    device = x.device
    rows = torch.arange(models, device=device)[:, None]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd, momentum=momentum,
                                foreach=True)
    for _ in range(steps):
        index = torch.stack([torch.randint(0, int(n), (batch,), generator=g)
                             for n, g in zip(sizes, generators, strict=False)]).to(device)
        outputs, labels = model(x[rows, index]), y[rows, index]
        if loss == "squared":
            objective = ((outputs[..., 0] - (2.0 * labels - 1)) ** 2).mean(dim=1).sum()
        else:
            objective = nn.functional.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="none")
            objective = objective.view(models, batch).mean(dim=1).sum()
        optimizer.zero_grad(set_to_none=False)
        objective.backward()
        optimizer.step()
    return model


def replace_labels(labels: torch.Tensor, fraction: float, n_classes: int, seed: int) -> torch.Tensor:
    """A copy of ``labels`` in which each label is, with probability ``fraction``, replaced by a uniformly random
    class (so about ``fraction / n_classes`` of the replaced labels stay correct by chance)."""
    if not 0 <= fraction < 1 or n_classes < 2:
        raise ValueError(f"fraction: got {fraction}, expected [0, 1); n_classes: got {n_classes}, expected >= 2")
    labels = labels.clone()
    generator = torch.Generator().manual_seed(seed)
    replace = torch.rand(len(labels), generator=generator) < fraction  # drawn on the host, then moved
    labels[replace.to(labels.device)] = torch.randint(0, n_classes, (int(replace.sum()),),
                                                      generator=generator).to(labels.device)
    return labels


def tree_students(samples: Sequence[tuple[torch.Tensor, torch.Tensor]], tests: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  channels: int, seeds: Sequence[int], *, steps: int, lr: float = 0.02, wd: float = 3e-3,
                  gamma: float = 0.5, delta: float = 0.01) -> list[dict[str, float]]:
    r"""Train one tree student per training set ``samples[m]`` (stacked, :func:`train_stacked`, squared loss,
    momentum 0.9, batch 32) and measure it: :math:`\rho`, the complexity term of T2, the margin bound T3 with it,
    the public code's formula, training error, error on ``tests[m]`` and the gap (test minus training error)."""
    sizes = [len(y) for _, y in samples]
    device = samples[0][0].device
    x = torch.zeros(len(samples), max(sizes), *samples[0][0].shape[1:], device=device)
    y = torch.zeros(len(samples), max(sizes), dtype=torch.long, device=device)
    for m, (xm, ym) in enumerate(samples):
        x[m, :len(ym)], y[m, :len(ym)] = xm, ym
    model = train_stacked(StackedTree(len(samples), channels).to(device), x, y, sizes, seeds, batch=32, lr=lr, wd=wd,
                          momentum=0.9, steps=steps, loss="squared")
    rhos, rows = model.filter_norm_products(), []
    with torch.no_grad():
        train_outputs, test_outputs = model(x)[..., 0], model(torch.stack([xt for xt, _ in tests]))[..., 0]
    for m, ((xm, ym), (_, yt)) in enumerate(zip(samples, tests, strict=True)):
        margins = ((2 * ym - 1) * train_outputs[m, :len(ym)]).double().cpu().numpy()
        test_error = float(((test_outputs[m] > 0).long() != yt).float().mean())
        energy, n = pixel_energies(xm).max(), len(ym)
        term = lambda r, e=energy, n=n: sparse_rademacher_bound(r, model.degrees, e, n)  # noqa: E731
        bound = margin_bound(term, float(rhos[m]), margins, gamma, delta)
        rows.append({"n": n, "rho": float(rhos[m]), "sparse": term(float(rhos[m])), "margin bound": bound["bound"],
                     "code bound": code_formula_bound(float(rhos[m]), model.degrees, [2] * (len(model.degrees) - 1),
                                                      energy, n, 1, delta),
                     "train error": float(np.mean(margins <= 0)), "test error": test_error,
                     "gap": test_error - float(np.mean(margins <= 0))})
    return rows


def readout_factor(degrees: Sequence[int], kernel_sides: Sequence[int]) -> float:
    r"""What the public code's formula leaves out of T2's architecture factor:
    :math:`\prod_l\sqrt{\deg_l}\,/\prod_{\rm conv}k_l`, i.e. :math:`\sqrt P` for a dense read-out over :math:`P`
    positions after convolutions of kernel side :math:`k_l` (1 after a tree, whose read-out has degree 1)."""
    return math.prod(math.sqrt(d) for d in degrees) / math.prod(kernel_sides)


def comparative_first_term(clean_depths: Sequence[int | None], noisy_depths: Sequence[int | None], layers: int) -> float:
    r"""The data-dependent term of Conjecture (comparative bound) estimated over paired runs:
    :math:`\widehat{\Pr}[d_\varepsilon(f_S)\ge d_\varepsilon(f_{\tilde S})]`, the fraction of pairs ``(clean, noisy)`` in
    which the clean network is not shallower; ``None`` (no layer separates) counts as ``layers + 1``."""
    if len(clean_depths) != len(noisy_depths) or not clean_depths:
        raise ValueError("need one noisy run per clean run, and at least one pair")
    depth = lambda d: layers + 1 if d is None else d  # noqa: E731
    return float(np.mean([depth(c) >= depth(p) for c, p in zip(clean_depths, noisy_depths, strict=False)]))


def conv_student(kind: str, channels: int, split, *, n_outputs: int, steps: int, lr: float, seed: int,
                 gamma: float = 0.5, delta: float = 0.01) -> dict:
    r"""Train one :func:`sparse_cnn` student on ``split`` (SGD, momentum 0.9, weight decay :math:`3\cdot10^{-3}`,
    batch 32, squared loss) and return its architecture, T2 and GRS complexity terms, C1's factors, the public
    code's formula, training and test error, and (one output) the margin bound T3."""
    from .training import train_sgd

    torch.manual_seed(seed)
    model = sparse_cnn(kind, channels, n_outputs=n_outputs, image_size=split.x_train.shape[-1])
    model = model.to(split.x_train.device)
    train_sgd(model, split, batch=32, lr=lr, wd=3e-3, steps=steps, seed=seed, momentum=0.9, loss="squared")
    arch = architecture(model, tuple(split.x_train.shape[1:]))
    energies, n = pixel_energies(split.x_train), len(split.y_train)
    with torch.no_grad():
        train_out, test_out = model(split.x_train), model(split.x_test)
    predict = (lambda o: (o[:, 0] > 0).long()) if n_outputs == 1 else (lambda o: o.argmax(dim=1))
    sides = [int(math.isqrt(d)) for d in arch.degrees[:-1]]
    row = {"n": n, "rho": arch.filter_norm_product, "arch": arch,
           "sparse": sparse_rademacher_bound(arch.filter_norm_product, arch.degrees, energies.max(), n, n_outputs),
           "grs": grs_rademacher_bound(arch.toeplitz_norm_product, arch.depth, energies.sum(), n, n_outputs),
           "c1": bound_ratio(arch, energies), "readout factor": readout_factor(arch.degrees, sides),
           "code bound": code_formula_bound(arch.filter_norm_product, arch.degrees, sides, energies.max(), n,
                                            n_outputs, delta),
           "train error": float((predict(train_out) != split.y_train).float().mean()),
           "test error": float((predict(test_out) != split.y_test).float().mean())}
    if n_outputs == 1:
        margins = ((2 * split.y_train - 1) * train_out[:, 0]).double().cpu().numpy()
        term = lambda r: sparse_rademacher_bound(r, arch.degrees, energies.max(), n)  # noqa: E731
        row["margin bound"] = margin_bound(term, arch.filter_norm_product, margins, gamma, delta)["bound"]
    return row


# ----------------------------------------------------------------------------------------------
# The paper's CONV-L-H networks on MNIST and CIFAR-10 (the full profile)

PAPER_MILESTONES = (60, 100, 300)
"""Epochs at which the public code's schedule multiplies the rate by 0.2 (of its 510 epochs)."""


def conv_lh(depth: int, channels: int, image_size: int, in_channels: int = 1, n_outputs: int = 10) -> nn.Sequential:
    r"""CONV-L-H of Galanti, Xu, Galanti and Poggio: ``depth`` (:math:`L`) bias-free 2x2 stride-1 convolutions of
    ``channels`` (:math:`H`) channels, each followed by ReLU, then a dense linear read-out.

    Each 2x2 stride-1 layer without padding maps an :math:`s\times s` map to :math:`(s-1)\times(s-1)`, so layer
    :math:`l` has :math:`P^{\rm out}_l=(s-l)^2` positions and degree 4, and the read-out reads the remaining
    :math:`(s-L)^2` positions (degree :math:`(s-L)^2`; 625 for :math:`L=3` on 28x28). The read-out is written as a
    convolution whose kernel covers that map (one output position): the same linear map as the paper's fully
    connected layer on the flattened features, without its bias. No bias, batch norm or pooling anywhere, so
    :math:`f(cx)=cf(x)` for :math:`c>0`. This is :func:`sparse_cnn` ``"overlap"`` with ``depth`` layers."""
    return sparse_cnn("overlap", channels, n_outputs=n_outputs, image_size=image_size, in_channels=in_channels,
                      depth=depth)


def subsample(split, n: int, seed: int):
    """The first ``n`` training images of a permutation seeded with ``seed`` (all of them when ``n`` is at least
    the training set's size), with the whole test set; indices drawn on the host, images stay on their device."""
    total = len(split.y_train)
    if n < 1:
        raise ValueError(f"n: got {n}, expected a positive number of training images")
    if n >= total:
        return split
    index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].to(split.y_train.device)
    return type(split)(split.x_train[index], split.y_train[index], split.x_test, split.y_test)


def batched_outputs(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """``model(x)`` in eval mode and batches of ``batch`` (a whole data set does not fit one forward pass)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[first:first + batch]) for first in range(0, len(x), batch)])


def measure_network(model: nn.Module, split, *, delta: float = 0.01, batch: int = 1000) -> dict:
    r"""The bounds of a trained sparse network (:func:`architecture`) and its measured errors on ``split``.

    Returns :math:`n`, :math:`L`, :math:`\rho`, the complexity terms :math:`\hat{\mathfrak R}_S` of T2
    (:func:`sparse_rademacher_bound`, busiest pixel's energy) and of GRS (:func:`grs_rademacher_bound`, Toeplitz
    norms by L1, the sample's energy), C1's factors (:func:`bound_ratio`), the public code's formula
    (:func:`code_formula_bound`) and its omitted read-out factor, training and test error (argmax, or the sign
    for one output) and the gap = test error - training error. Norms and energies are float64 on the host;
    outputs are computed where ``model`` lives, one host copy per error."""
    arch = architecture(model, tuple(split.x_train.shape[1:]))
    energies, n, k = pixel_energies(split.x_train), len(split.y_train), arch.n_outputs

    def error(x, y):
        out = batched_outputs(model, x, batch)
        predicted = (out[:, 0] > 0).long() if k == 1 else out.argmax(dim=1)
        return float((predicted != y).float().mean())

    sides = [int(math.isqrt(d)) for d in arch.degrees[:-1]]
    train_error, test_error = error(split.x_train, split.y_train), error(split.x_test, split.y_test)
    rho = arch.filter_norm_product
    return {"n": n, "depth": arch.depth - 1, "rho": rho, "arch": arch,
            "sparse": sparse_rademacher_bound(rho, arch.degrees, energies.max(), n, k),
            "grs": grs_rademacher_bound(arch.toeplitz_norm_product, arch.depth, energies.sum(), n, k),
            "c1": bound_ratio(arch, energies), "readout factor": readout_factor(arch.degrees, sides),
            "code bound": code_formula_bound(rho, arch.degrees, sides, energies.max(), n, k, delta),
            "train error": train_error, "test error": test_error, "gap": test_error - train_error}


def train_conv_lh(split, depth: int, channels: int, *, n: int, epochs: int, seed: int, lr: float = 0.01,
                  momentum: float = 0.9, wd: float = 3e-3, batch: int = 32,
                  milestones: Sequence[int] = PAPER_MILESTONES, delta: float = 0.01) -> dict:
    r"""Train :func:`conv_lh` on ``n`` training images of ``split`` (:func:`subsample`; all classes, one output
    per class) and measure it (:func:`measure_network`).

    Training: :func:`theorylab.training.train_epochs`, the public code's loss (mean squared error to one-hot
    targets, averaged over the outputs; the summed squared error to :math:`\pm1` targets of the chapter's small
    students has a twenty times larger gradient, and at rate 0.01 with momentum 0.9 it kills these
    networks' ReLUs within the first epoch), SGD with
    rate ``lr``, ``momentum``, weight decay ``wd``, batches of ``batch``, the rate multiplied by 0.2 at each of
    ``milestones`` below ``epochs``; the model is built with ``torch.manual_seed(seed)`` and moved to the
    images' device. The row gains ``epochs``, ``steps``, ``seconds`` and the final training loss."""
    from .training import train_epochs

    sample = subsample(split, n, seed)
    torch.manual_seed(seed)
    model = conv_lh(depth, channels, sample.x_train.shape[-1], sample.x_train.shape[1], int(split.y_train.max()) + 1)
    result = train_epochs(model.to(sample.x_train.device), sample, batch=batch, lr=lr, wd=wd, epochs=epochs,
                          milestones=[m for m in milestones if m < epochs], momentum=momentum, loss="mse",
                          seed=seed, record=lambda _: {})
    row = measure_network(result.model, sample, delta=delta)
    return {**row, "epochs": result.epochs, "steps": result.steps, "seconds": result.seconds,
            "train loss": result.history[-1]["train_loss"]}


def paper_sweep(load, names: Sequence[str], depths: Sequence[int], sizes: Sequence[int], *, width: int, epochs: int,
                seed: int, checkpoint=None) -> dict[tuple[str, int, int], dict]:
    """:func:`train_conv_lh` for every data set in ``names`` (``load(name)`` gives its :class:`~theorylab.data.Split`,
    loaded once), every depth and every training-set size, keyed ``(name, L, n)``. Each run goes through
    ``checkpoint(f"paper-{name}-{L}-{n}", compute)`` when given (``cfg.checkpoint``: resumable run by run)."""
    checkpoint = checkpoint or (lambda _, compute: compute())
    runs = {}
    for name in names:
        split = load(name)
        for depth in depths:
            for n in sorted({min(n, len(split.y_train)) for n in sizes}):  # "the whole set" is its size
                def compute(s=split, d=depth, m=n):
                    return train_conv_lh(s, d, width, n=m, epochs=epochs, seed=seed)

                runs[(name, depth, n)] = checkpoint(f"paper-{name}-{depth}-{n}", compute)
    return runs


def paper_report(runs: dict) -> str:
    """One line per CONV-L-H run ``(data set, L, n)``: errors, gap, rho and the three bounds' values."""
    lines = []
    for (name, depth, _), r in runs.items():
        lines.append(f"{name:8s} L={depth} n={r['n']:<6d} train err {r['train error']:.3f}, gap {r['gap']:+.3f}; "
                     f"rho {r['rho']:.3g}; sparse {r['sparse']:.3g}, GRS {r['grs']:.3g}, code {r['code bound']:.3g}")
    return "\n".join(lines)


def stacked_depth_runs(split, depth: int, width: int, noises: Sequence[float], seeds: Sequence[int], *, steps: int,
                       lr: float = 0.01, wd: float = 5e-4, batch: int = 64, eps: float = 0.01) -> list[dict]:
    r"""One MLP per ``(noise, seed)`` pair (:class:`StackedMLP`, cross-entropy, momentum 0.9), trained on the
    training labels with a fraction ``noise`` replaced (:func:`replace_labels`, seeded ``seed + 1``); for each:
    the fit of the labels trained on, per-layer NCC training accuracy and CDNV on those labels,
    :math:`d_\varepsilon` and the test error on clean test labels."""
    labels = torch.stack([replace_labels(split.y_train, p, 10, s + 1) for p, s in zip(noises, seeds, strict=True)])
    models = len(labels)
    x = split.x_train.expand(models, -1, -1).contiguous()
    model = StackedMLP(models, [x.shape[-1]] + [width] * depth + [10]).to(x.device)
    train_stacked(model, x, labels, [x.shape[1]] * models, seeds, batch=batch, lr=lr, wd=wd, momentum=0.9,
                  steps=steps, loss="cross_entropy")
    with torch.no_grad():
        features, fit = model.features(x), (model(x).argmax(-1) == labels).float().mean(1)
        test = (model(split.x_test.expand(models, -1, -1)).argmax(-1) != split.y_test).float().mean(1)
    rows = []
    for m, (p, s) in enumerate(zip(noises, seeds, strict=False)):
        layers = [f[m].double().cpu().numpy() for f in features]
        trained_on = labels[m].cpu().numpy()
        accuracies = [ncc_train_accuracy(f, trained_on) for f in layers]
        rows.append({"noise": p, "seed": s, "layers": depth, "fit": float(fit[m]), "ncc": accuracies,
                     "cdnv": layer_cdnv(layers, trained_on), "depth": effective_depth(accuracies, eps),
                     "test error": float(test[m])})
    return rows


def toeplitz_relative_error(layer: nn.Conv2d, input_shape: Sequence[int]) -> float:
    r"""L1 checked on an explicit operator: :math:`\big|\|T(w)\|_F/(\sqrt{P_{\rm out}}\|w\|_F)-1\big|`, with
    :math:`T(w)` built from basis images (:func:`dense_operator`)."""
    dense = dense_operator(layer, input_shape)
    expected = math.sqrt(dense.shape[0] // layer.out_channels) * float(layer.weight.detach().double().norm())
    return abs(float(np.linalg.norm(dense)) / expected - 1)


def architecture_table(rows: Sequence[tuple[str, str, int, int, int]]) -> tuple[list[dict[str, float]], str]:
    """C1's architecture factors (:func:`architecture_factors`, kernel 2) for ``(input, description, size, layers,
    stride)`` rows, and the table as text."""
    factors = [architecture_factors(size, layers, stride) for _, _, size, layers, stride in rows]
    lines = [f"{'input':6s} {'layers':28s} {'Toeplitz':>12s} {'sparse':>8s} {'ratio':>12s}"]
    for (size_text, layers_text, *_), f in zip(rows, factors, strict=True):
        lines.append(f"{size_text:6s} {layers_text:28s} {f['toeplitz']:12.4g} {f['sparse']:8.4g} {f['ratio']:12.4g}")
    return factors, "\n".join(lines)


def gap_sweep(teacher, test: tuple[torch.Tensor, torch.Tensor], conditions: Sequence[tuple[int, int, float]],
              seeds: int, *, steps: int, seed: int, gamma: float = 0.5) -> dict[tuple[int, int, float], list[dict]]:
    r"""Tree students for every ``(n, width, noise)`` condition and ``seeds`` seeds (:func:`tree_students`; one
    stack per width). ``teacher(n, k)`` gives the :math:`k`-th training set of size ``n``; a fraction ``noise`` of
    its labels and of the test labels is replaced (:func:`replace_labels`). Each row gains ``term``
    :math:`=\frac2\gamma\hat{\mathfrak R}_S(\mathcal F_{\rho(f)})` (T2 at the network's own :math:`\rho`)."""
    if seeds < 1 or not conditions:
        raise ValueError(f"need at least one seed and one condition; got {seeds} and {list(conditions)}")
    results: dict[tuple[int, int, float], list[dict]] = {}
    for width in sorted({w for _, w, _ in conditions}):
        keys = [c for c in conditions if c[1] == width]
        samples, tests, generator_seeds = [], [], []
        for n, _, noise in keys:
            for k in range(seeds):
                x, y = teacher(n, k)
                corruption = seed + 1000 * k + round(100 * noise)
                samples.append((x, replace_labels(y, noise, 2, corruption)))
                tests.append((test[0], replace_labels(test[1], noise, 2, corruption + 500)))
                generator_seeds.append(seed + k)
        torch.manual_seed(seed + width)
        rows = tree_students(samples, tests, width, generator_seeds, steps=steps, gamma=gamma)
        for i, key in enumerate(keys):
            results[key] = [{**r, "term": 2 / gamma * r["sparse"]} for r in rows[i * seeds:(i + 1) * seeds]]
    return {key: results[key] for key in conditions}


def sweep_groups(sweep: dict) -> dict[str, list]:
    """The sweep's conditions grouped for plotting: sample sizes, widths, label noise (at n = 1000, width 32)."""
    return {"sample size": [k for k in sweep if k[1] == 32 and k[2] == 0],
            "width": [k for k in sweep if k[0] == 1000 and k[2] == 0],
            "label noise": [k for k in sweep if k[0] == 1000 and k[1] == 32]}


def tracking(sweep: dict, sample_sizes: Sequence[int]) -> dict[str, list]:
    """Seed by seed: does the complexity term move with the measured gap? Rises with label noise (0, 0.2, 0.4 at
    n = 1000, width 32) and from width 8 to 32; the gap at the largest against the smallest n; Spearman
    correlations of (term, gap) over all conditions and of (n, term); ratios at the largest over the smallest n."""
    from scipy.stats import spearmanr

    ns = sorted(set(sample_sizes))
    seeds = range(len(next(iter(sweep.values()))))
    get = lambda key, q: [sweep[key][k][q] for k in seeds]  # noqa: E731
    def rises(keys, q):  # per seed: strictly increasing along keys
        return [all(a < b for a, b in zip(v, v[1:], strict=False)) for v in zip(*(get(key, q) for key in keys), strict=True)]
    noise_keys = [(1000, 32, p) for p in (0.0, 0.2, 0.4)]
    first, last = (ns[0], 32, 0.0), (ns[-1], 32, 0.0)
    keys = list(sweep)
    return {"noise_term_rises": rises(noise_keys, "term"), "noise_gap_rises": rises(noise_keys, "gap"),
            "width_term_rises": rises([(1000, 8, 0.0), (1000, 32, 0.0)], "term"),
            "width_gap_rises": rises([(1000, 8, 0.0), (1000, 32, 0.0)], "gap"),
            "n_gap_falls": [a > b for a, b in zip(get(first, "gap"), get(last, "gap"), strict=False)],
            "spearman_term_gap": [float(spearmanr([sweep[c][k]["term"] for c in keys],
                                                    [sweep[c][k]["gap"] for c in keys])[0]) for k in seeds],
            "spearman_n_term": [float(spearmanr(ns, [sweep[(n, 32, 0.0)][k]["term"] for n in ns])[0]) for k in seeds],
            "term_ratio_n": [b / a for a, b in zip(get(first, "term"), get(last, "term"), strict=False)],
            "gap_ratio_n": [b / a for a, b in zip(get(first, "gap"), get(last, "gap"), strict=False)],
            "train_error_largest_n": get(last, "train error")}


def mean_last_cdnv_by_noise(summary: dict) -> list[float]:
    """Mean over seeds of the last hidden layer's CDNV, on clean labels and then at each noise level in
    increasing order, from one depth's entry of :func:`depth_summary`."""
    noisy = summary["noisy"]
    return [float(np.mean(summary["clean last cdnv"]))] + [float(np.mean(noisy[p]["last cdnv"]))
                                                           for p in sorted(noisy, key=float)]


def depth_summary(depth_runs: dict[int, list[dict]]) -> dict[int, dict]:
    r"""Per total depth: the clean runs' effective depths (``None`` counted as depth + 1), test errors and
    last-layer CDNV seed by seed; for every noise level :math:`p>0` in the runs, the noisy runs' effective
    depths, the first term of the comparative bound (:func:`comparative_first_term`), its estimate
    ``first term + p`` (slack dropped) and their last-layer CDNV; and, seed by seed, whether the last-layer
    CDNV rises with :math:`p`."""
    out = {}
    for layers, rows in depth_runs.items():
        noises = sorted({r["noise"] for r in rows} - {0.0})
        by_noise = {p: sorted((r for r in rows if r["noise"] == p), key=lambda r: r["seed"]) for p in (0.0, *noises)}
        clean = by_noise[0.0]
        depth = lambda r, top=layers + 1: top if r["depth"] is None else r["depth"]  # noqa: E731
        noisy = {}
        for p in noises:
            first = comparative_first_term([r["depth"] for r in clean], [r["depth"] for r in by_noise[p]], layers)
            noisy[str(p)] = {"depths": [depth(r) for r in by_noise[p]], "first term": first, "estimate": first + p,
                             "last cdnv": [r["cdnv"][-1] for r in by_noise[p]]}
        last = [[r["cdnv"][-1] for r in by_noise[p]] for p in (0.0, *noises)]
        out[layers] = {"clean depths": [depth(r) for r in clean], "clean test errors": [r["test error"] for r in clean],
                       "clean last cdnv": last[0], "noisy": noisy,
                       "cdnv rises with noise": [all(a < b for a, b in zip(seed, seed[1:], strict=False))
                                                 for seed in zip(*last, strict=True)]}
    return out


def depth_report(summary: dict[int, dict]) -> str:
    """Lines of :func:`depth_summary`: per depth the clean runs, then per noise level; measured numbers ``≈``."""
    from .runtime import measured

    lines = []
    for layers, s in summary.items():
        lines.append(f"{layers} layers, clean: d {measured(s['clean depths'], '.0f')}, test error "
                     f"{measured(s['clean test errors'], '.3f')}, last-layer CDNV {measured(s['clean last cdnv'])}")
        for p, t in s["noisy"].items():
            lines.append(f"  noise {float(p):.2f}: d {measured(t['depths'], '.0f')} ({layers + 1}: none), first term "
                         f"{measured(t['first term'])}, estimate {measured(t['estimate'])}, last-layer CDNV "
                         f"{measured(t['last cdnv'])}")
    return "\n".join(lines)


def teacher_tree_images(n: int, size: int = 8, channels: int = 4, seed: int = 0, teacher_seed: int = 0,
                        n_reference: int = 20_000) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Images of i.i.d. :math:`N(0,1)` pixels (``1 x size x size``) labelled by a bias-free tree teacher (2x2
    stride-2 convolutions with ``channels`` channels and Gaussian weights, scalar output):
    :math:`y=\mathbf 1[f^*(x)>\text{median}]`, the median over ``n_reference`` images of the same teacher."""
    if n < 1:
        raise ValueError(f"n: got {n}, expected a positive number of images")
    generator = torch.Generator().manual_seed(teacher_seed)
    teacher = sparse_cnn("tree", channels, 1, size)
    with torch.no_grad():
        for layer in teacher.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        reference = torch.randn((n_reference, 1, size, size), generator=generator)
        threshold = teacher(reference).median()
        x = torch.randn((n, 1, size, size), generator=torch.Generator().manual_seed(seed))
        y = (teacher(x)[:, 0] > threshold).long()
    return x, y


def teacher_samples(seed: int, device: torch.device | str = "cpu"):
    """``teacher(n, k)``: the ``k``-th training set of ``n`` teacher-labelled images
    (:func:`teacher_tree_images` with seed ``seed + n + 7919 k``), drawn on the host and moved to ``device``."""
    return lambda n, k=0: tuple(t.to(device) for t in teacher_tree_images(n, seed=seed + n + 7919 * k))


def to_device(split, device: torch.device | str):
    """``split`` (a :class:`theorylab.data.Split`) with its four tensors on ``device``."""
    from .data import Split

    return Split(*(t.to(device) for t in (split.x_train, split.y_train, split.x_test, split.y_test)))


def recordable(row: dict) -> dict:
    """A result row without the objects that are not numbers (the architecture)."""
    return {key: value for key, value in row.items() if key != "arch"}


def sweep_report(sweep: dict) -> str:
    """One line per sweep condition: rho, complexity term, training error and gap of every seed (``≈``)."""
    from .runtime import measured

    lines = []
    for (n, width, noise), rows in sweep.items():
        values = {q: [r[q] for r in rows] for q in ("rho", "term", "train error", "gap")}
        lines.append(f"n={n:<5d} width {width:<3d} noise {noise:.1f}: rho {measured(values['rho'], '.0f')}, "
                     f"term {measured(values['term'], '.0f')}, train err {measured(values['train error'], '.3f')}, "
                     f"gap {measured(values['gap'], '.3f')}")
    return "\n".join(lines)


def headline_numbers(cfg, ratio: dict, sweep: dict, track: dict, summary: dict) -> dict:
    """The measured numbers the chapter's prose quotes (through ``glue``), by name."""
    sizes = cfg.sample_sizes
    mean = lambda key, n: float(np.mean([r[key] for r in sweep[(n, 32, 0.0)]]))  # noqa: E731
    top = str(max(cfg.noise_percents) / 100)
    last = {"clean": summary[10]["clean last cdnv"], "noisy": summary[10]["noisy"][top]["last cdnv"]}
    values = {"n_seeds": int(cfg.seeds), "depth_width": int(cfg.depth_width),
              "ratio_tree": float(ratio["T"]), "ratio_overlap": float(ratio["O"]),
              "gap_small_n": mean("gap", min(sizes)), "gap_large_n": mean("gap", max(sizes)),
              "term_ratio_n": float(np.mean(track["term_ratio_n"])),
              "train_error_large_n": float(np.mean(track["train_error_largest_n"])),
              "first_term_max": float(max(t["first term"] for s in summary.values() for t in s["noisy"].values())),
              "smallest_noise": float(min(cfg.noise_percents)) / 100,
              "clean_error_max": float(max(max(s["clean test errors"]) for s in summary.values())),
              "clean_depths_6": str(summary[6]["clean depths"]), "clean_depths_10": str(summary[10]["clean depths"])}
    for key in ("spearman_n_term", "spearman_term_gap"):
        values[f"{key}_min"], values[f"{key}_max"] = float(min(track[key])), float(max(track[key]))
    for kind, v in last.items():
        values[f"{kind}_cdnv_mean"], values[f"{kind}_cdnv_sd"] = float(np.mean(v)), float(np.std(v, ddof=1))
    return values


def sweep_prose_numbers(sweep: dict, sizes: Sequence[int], summary: dict) -> dict:
    """More measured numbers for the prose (through ``glue``): mean term and rho at the smallest, the
    middle (1000) and the largest n; the gap's fall; the width-8 train errors; the width step's mean term
    difference over the largest seed range of the term at width 8 or 32; the margins by which the
    10-layer last CDNV rises between consecutive noise levels (min and max over seeds and levels); the
    range of clean test errors; Spearman values as text ("x on every seed" when all seeds agree)."""
    def mean(key, cond):
        return float(np.mean([r[key] for r in sweep[cond]]))

    small, large = (min(sizes), 32, 0.0), (max(sizes), 32, 0.0)
    values = {f"{q}_{name}_n": mean(q, cond) for q in ("term", "rho")
              for name, cond in (("small", small), ("mid", (1000, 32, 0.0)), ("large", large))}
    values["gap_fall_n"] = mean("gap", small) / mean("gap", large)
    narrow, wide = sweep[(1000, 8, 0.0)], sweep[(1000, 32, 0.0)]
    values["width8_train_min"] = float(min(r["train error"] for r in narrow))
    values["width8_train_max"] = float(max(r["train error"] for r in narrow))
    spread = max(np.ptp([r["term"] for r in rows]) for rows in (narrow, wide))
    values["width_diff_over_spread"] = float((mean("term", (1000, 32, 0.0)) - mean("term", (1000, 8, 0.0))) / spread)
    noisy = summary[10]["noisy"]
    levels = [summary[10]["clean last cdnv"]] + [noisy[p]["last cdnv"] for p in sorted(noisy, key=float)]
    steps = [b - a for lo, hi in zip(levels[1:], levels[2:], strict=False) for a, b in zip(lo, hi, strict=True)]
    values["cdnv_margin_min"] = float(min(steps)) if steps else float("nan")
    values["cdnv_margin_max"] = float(max(steps)) if steps else float("nan")
    errors = [e for s in summary.values() for e in s["clean test errors"]]
    values["clean_error_min"] = float(min(errors))
    return values


def spearman_text(values: Sequence[float], fmt: str = ".1f") -> str:
    """``"x on every seed"`` when all values agree after formatting, else ``"between a and b over seeds"``."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return f"{lo} on every seed" if lo == hi else f"between {lo} and {hi} over seeds"
