"""The small training loops the chapters share, with hooks for what each chapter records."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .data import Split
from .validation import positive_int


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(widths: Sequence[int], init: str = "default", activation: str = "relu") -> nn.Sequential:
    """Fully connected network ``widths[0] -> ... -> widths[-1]`` with ReLU (or ``tanh``) between the linear maps:
    PyTorch's default init, or ``kaiming`` (normal, fan-in, zero biases), which deep narrow networks need to
    train at small rates."""
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths: got {list(widths)!r}, expected at least two positive sizes")
    if init not in ("default", "kaiming"):
        raise ValueError(f"init: got {init!r}, expected 'default' or 'kaiming'")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: got {activation!r}, expected one of {list(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layer = nn.Linear(fan_in, fan_out)
        if init == "kaiming":
            nn.init.kaiming_normal_(layer.weight, nonlinearity=activation)
            nn.init.zeros_(layer.bias)
        layers.append(layer)
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def small_cnn(channels: int = 32, n_classes: int = 10, in_channels: int = 1, head: Sequence[int] = ()) -> nn.Sequential:
    """3x3 conv (padding 1) -> ReLU -> 3x3 conv -> ReLU -> global average pool -> a fully connected head:
    one linear map, or ``head`` hidden widths with ReLU between (``head=(128,)``: two linear layers)."""
    if min((channels, n_classes, in_channels, *head)) < 1:
        raise ValueError(f"channels, n_classes, in_channels and head widths must be positive; got "
                         f"{channels}, {n_classes}, {in_channels}, {tuple(head)}")
    # the convolutions are built first: the order of construction is the order of the random initialisation
    convolutions = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*convolutions, *mlp([channels, *head, n_classes]))


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The weights of every linear and convolutional layer, in order."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def pm_one_targets(labels: torch.Tensor, n_outputs: int) -> torch.Tensor:
    r"""Squared-loss targets: :math:`\pm1` for one output (label 1 is +1), :math:`2\,\mathrm{onehot}-1` for several."""
    if n_outputs == 1:
        return (2.0 * labels.float() - 1.0)[:, None]
    return 2.0 * nn.functional.one_hot(labels, n_outputs).float() - 1.0


def steps_for_epochs(n_samples: int, batch: int, epochs: float) -> int:
    r"""Steps of a fixed-epoch protocol: :math:`\lceil E\cdot N/B\rceil`.

    A product within 1e-9 of an integer is that integer: decimal epochs such as 1.1 are not exact in
    binary, and ``1.1 * 50`` must give 55 steps, not 56."""
    if min(n_samples, batch) < 1 or epochs <= 0:
        raise ValueError(f"n_samples, batch and epochs must be positive, got {n_samples}, {batch}, {epochs}")
    return math.ceil(epochs * n_samples / batch - 1e-9)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` classified as ``y``."""
    return float((model(x).argmax(dim=1) == y).float().mean())


@dataclass
class UnrolledSum:
    r"""Running sum of L3 for one weight: from step :math:`T-n` on, :math:`S \leftarrow (1-\mu\,\mathrm{wd})S - \mu G`
    in float64, with the snapshot :math:`W_{T-n}` and the learning rates applied (not the history)."""

    weight: torch.Tensor
    window: int
    start: torch.Tensor | None = None
    total: torch.Tensor | None = None
    lrs: list[float] = field(default_factory=list)
    gradients_checked: list[torch.Tensor] = field(default_factory=list)


@dataclass
class TrainResult:
    model: nn.Module
    steps: int
    history: list[dict[str, Any]]
    unrolled: UnrolledSum | None


def train_sgd(model: nn.Module, data: Split, *, batch: int | None, lr: float, wd: float, steps: int, seed: int = 0,
              momentum: float = 0.0, loss: str = "cross_entropy",
              record_every: int = 0, record: Callable[[nn.Module], dict[str, Any]] | None = None,
              unroll: tuple[torch.Tensor, int] | None = None, check_gradients: int = 0) -> TrainResult:
    r"""SGD on cross-entropy (or ``loss="squared"`` to :func:`pm_one_targets`) at a constant rate (plain by
    default: the certificate of L3 needs it plain).

    Each step draws ``batch`` training indices uniformly with replacement (a ``torch.Generator`` seeded
    with ``seed``; ``batch=None`` uses every training sample instead: full-batch gradient descent), then
    applies PyTorch's ``SGD(lr, weight_decay=wd, momentum=momentum)`` update (``momentum`` other than 0 is
    for chapters that need no certificate)
    :math:`W \leftarrow (1-\mu\,\mathrm{wd})W - \mu G`. Every ``record_every`` steps (and at the end)
    ``record(model)`` is appended to the history with the step. ``unroll=(weight, n)`` keeps the running
    sum of the last ``n`` updates of ``weight`` (:class:`UnrolledSum`), and stores the gradient of that
    weight at ``check_gradients`` evenly spaced steps of the window.
    """
    if batch is not None:
        batch = positive_int("batch", batch)  # None means full batch
    if min(batch or 1, steps) < 1 or lr <= 0 or wd < 0:
        raise ValueError(f"batch and steps must be positive, lr positive and wd non-negative; "
                         f"got batch={batch}, steps={steps}, lr={lr}, wd={wd}")
    if loss not in ("cross_entropy", "squared"):
        raise ValueError(f"loss: got {loss!r}, expected 'cross_entropy' or 'squared' (to +-1 targets)")
    if not 0 <= momentum < 1 or (momentum and unroll is not None):
        raise ValueError(f"momentum: got {momentum}, expected [0, 1), and 0 when unrolling (L3 needs plain SGD)")
    if unroll is not None and not 0 < unroll[1] <= steps:
        raise ValueError(f"unroll window: got {unroll[1]}, expected 1..{steps}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd, momentum=momentum)
    history: list[dict[str, Any]] = []
    tracker = UnrolledSum(unroll[0], unroll[1]) if unroll is not None else None
    check_at: set[int] = set()
    if tracker is not None and check_gradients:
        first = steps - tracker.window
        check_at = {first + (k * tracker.window) // check_gradients for k in range(check_gradients)}
    n = len(data.y_train)
    for step in range(steps):
        if record is not None and record_every and step % record_every == 0:
            history.append({"step": step, **record(model)})
        if batch is None:
            outputs, labels = model(data.x_train), data.y_train
        else:
            index = torch.randint(0, n, (batch,), generator=generator)
            outputs, labels = model(data.x_train[index]), data.y_train[index]
        if loss == "squared":
            objective = ((outputs - pm_one_targets(labels, outputs.shape[1])) ** 2).sum(dim=1).mean()
        else:
            objective = nn.functional.cross_entropy(outputs, labels)
        optimizer.zero_grad(set_to_none=False)
        objective.backward()
        if tracker is not None and step >= steps - tracker.window:
            gradient = tracker.weight.grad.detach().to(torch.float64)
            if tracker.start is None:
                tracker.start = tracker.weight.detach().to(torch.float64).clone()
                tracker.total = torch.zeros_like(tracker.start)
            tracker.total = (1 - lr * wd) * tracker.total - lr * gradient
            tracker.lrs.append(lr)
            if step in check_at:
                tracker.gradients_checked.append(gradient.clone())
        optimizer.step()
    if record is not None:
        history.append({"step": steps, **record(model)})
    return TrainResult(model=model, steps=steps, history=history, unrolled=tracker)


@dataclass
class EpochResult:
    """What :func:`train_epochs` returns: the trained model and one history row per recorded epoch."""

    model: nn.Module
    epochs: int
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """The CIFAR augmentation: zero-pad by ``padding``, crop back at a random offset, flip half the
    images left-right (one offset and one coin per image), on the images' device."""
    offsets, flips = _crop_flip_draws(len(images), generator, padding, images.device)
    return crop_flip(images, offsets, flips, padding)


def _crop_flip_draws(n: int, generator: torch.Generator, padding: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets ``(n, 2)`` in ``0..2*padding`` and coins ``(n,)``, drawn on the host, moved in one copy each."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets.to(device, non_blocking=True), flips.to(device, non_blocking=True)


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop ``images`` zero-padded by ``padding`` at ``offsets[k] = (dy, dx)`` and mirror those with
    ``flips[k]``: ``out[k, c, i, j] = pad(x)[k, c, i + dy_k, j + dx_k]``, then ``j -> W - 1 - j``."""
    n, channels, height, width = images.shape
    padded = nn.functional.pad(images, (padding,) * 4)
    rows = (offsets[:, 0, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (offsets[:, 1, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    out = padded[batch, channel, rows, cols]
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def batch_bounds(n: int, batch: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each batch of an epoch over ``n`` samples: batches of ``batch``, the last
    smaller one kept, except that a last batch of one sample joins the one before (batch norm cannot
    normalise a single sample)."""
    bounds = [(first, min(first + batch, n)) for first in range(0, n, batch)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def train_epochs(model: nn.Module, data: Split, *, batch: int, lr: float, wd: float, epochs: int,
                 milestones: Sequence[int] = (), gamma: float = 0.2, momentum: float = 0.0,
                 loss: str = "cross_entropy", augment: bool = False, seed: int = 0,  # or "squared", "mse"
                 autocast: torch.dtype | None = None, record_every: int = 0,
                 record: Callable[[nn.Module], dict[str, Any]] | None = None) -> EpochResult:
    r"""SGD by epochs, the papers' protocol: each epoch visits a fresh permutation of the training set
    in batches of ``batch`` (:func:`batch_bounds`: the last, smaller one kept), with PyTorch's ``SGD(lr, momentum,
    weight_decay=wd)`` and the step schedule :math:`\mu_e = \mu\,\gamma^{|\{m \in \mathrm{milestones}:
    m \le e\}|}` (``MultiStepLR``). Runs where ``data`` and ``model`` live (move both to the device
    first); ``autocast`` (``torch.bfloat16``) runs the forward pass in reduced precision on CUDA.
    Every ``record_every`` epochs (and at the end) ``record(model)`` is appended to the history, in
    eval mode, with the epoch, the rate and the mean training loss of that epoch."""
    import time

    batch, epochs = positive_int("batch", batch), positive_int("epochs", epochs)
    if lr <= 0 or wd < 0 or not 0 <= momentum < 1 or not 0 < gamma <= 1:
        raise ValueError(f"need lr > 0, wd >= 0, 0 <= momentum < 1, 0 < gamma <= 1; "
                         f"got lr={lr}, wd={wd}, momentum={momentum}, gamma={gamma}")
    if loss not in ("cross_entropy", "squared", "mse"):
        raise ValueError(f"loss: got {loss!r}, expected 'cross_entropy', 'squared' (summed over outputs, to "
                         "+-1 targets) or 'mse' (averaged over outputs, to one-hot 0/1 targets)")
    device = data.x_train.device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd, momentum=momentum)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma)
    history: list[dict[str, Any]] = []
    n, steps, start = len(data.y_train), 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        if augment:  # one epoch's draws, one copy to the device (not three blocking copies per batch)
            offsets, flips = _crop_flip_draws(n, generator, 4, device)
        total, rate = torch.zeros((), device=device), optimizer.param_groups[0]["lr"]
        for first, stop in batch_bounds(n, batch):
            index = order[first:stop]
            inputs, labels = data.x_train[index], data.y_train[index]
            if augment:
                inputs = crop_flip(inputs, offsets[first:stop], flips[first:stop], 4)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                outputs = model(inputs)
            outputs = outputs.float()
            if loss == "squared":
                objective = ((outputs - pm_one_targets(labels, outputs.shape[1])) ** 2).sum(dim=1).mean()
            elif loss == "mse":
                onehot = nn.functional.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
                objective = nn.functional.mse_loss(outputs, onehot)
            else:
                objective = nn.functional.cross_entropy(outputs, labels)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            total += objective.detach() * len(index)
            steps += 1
        schedule.step()
        if record is not None and (epoch + 1 == epochs or (record_every and (epoch + 1) % record_every == 0)):
            model.eval()
            with torch.no_grad():
                row = record(model)
            history.append({"epoch": epoch + 1, "lr": rate, "train_loss": float(total) / n, **row})
    model.eval()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EpochResult(model=model, epochs=epochs, steps=steps, seconds=time.perf_counter() - start,
                       history=history)


def batched_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Fraction of ``argmax model(x) == y``, in eval mode and in batches of ``batch`` (full data sets
    do not fit one forward pass); one host copy at the end."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with torch.no_grad():
        for first in range(0, len(y), batch):
            correct += (model(x[first:first + batch]).argmax(dim=1) == y[first:first + batch]).sum()
    return int(correct) / len(y)
