"""Data the chapters use: generated in code or shipped inside an installed package, never downloaded."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels of a train and a test set, as float32/int64 tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1


def digits(n_train: int = 1400, seed: int = 0, standardize: bool = True, images: bool = False) -> Split:
    r"""scikit-learn's 1,797 8x8 digits (shipped with the package), shuffled with ``seed`` and split
    ``n_train`` / rest. With ``standardize`` each pixel becomes :math:`(x-\bar x)/(s+10^{-3})`, with the
    training set's mean and standard deviation. ``images`` returns shape ``(N, 1, 8, 8)`` for
    convolutions, else ``(N, 64)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    if not 0 < n_train < len(x):
        raise ValueError(f"n_train: got {n_train!r}, expected an integer in [1, {len(x) - 1}]")
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:n_train], order[n_train:]
    if standardize:
        mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
        x = (x - mean) / (sd + 1e-3)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return Split(torch.as_tensor(x[train]), torch.as_tensor(y[train]),
                 torch.as_tensor(x[test]), torch.as_tensor(y[test]))


def class_images(n_classes: int = 10, n_train: int = 5000, n_test: int = 1000, size: int = 32,
                 noise: float = 1.0, seed: int = 0) -> Split:
    r"""Synthetic class images: class :math:`k` is a smooth random prototype :math:`P_k` (white noise
    blurred by a Gaussian of width ``size``/8, unit variance), and an example is
    :math:`P_k + \text{noise}\cdot Z` with white noise :math:`Z`; shape ``(N, 1, size, size)``."""
    if min(n_classes, n_train, n_test, size) < 1 or noise < 0:
        raise ValueError("n_classes, n_train, n_test and size must be positive and noise non-negative")
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(size)
    blur = np.exp(-(freq[:, None] ** 2 + freq[None, :] ** 2) * (2 * np.pi * size / 8) ** 2 / 2)
    prototypes = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n_classes, size, size))) * blur))
    prototypes /= prototypes.std(axis=(1, 2), keepdims=True)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rng.integers(0, n_classes, size=n)
        x = prototypes[labels] + noise * rng.normal(size=(n, size, size))
        return torch.as_tensor(x[:, None].astype(np.float32)), torch.as_tensor(labels.astype(np.int64))

    return Split(*sample(n_train), *sample(n_test))
