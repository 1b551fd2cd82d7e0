r"""The canonical representation hypothesis (chapter ``canonical-representations``).

One fully connected layer :math:`h_b = W h_a + \beta` of a trained network, seen through its inputs
:math:`h_a`, its pre-activation outputs :math:`h_b`, the per-sample neuron gradients
:math:`g_a=-\partial\ell/\partial h_a=W^\top g_b` and :math:`g_b=-\partial\ell/\partial h_b`, and the weight Grams
:math:`Z_a=W^\top W`, :math:`Z_b=WW^\top`. This module measures the six alignments of the canonical
representation hypothesis against two null baselines, the exact expected one-step drift of the weight Grams
under SGD (T1), the exact power-law propagation through a linear layer (T2) and power-law exponent fits
with bootstrap intervals (D4). Everything is float64 NumPy except :func:`layer_statistics`, which reads the
statistics out of a torch model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Split
from .validation import positive_int

MODES = ("raw", "centred", "normalised")
RELATIONS = ("a-RGA", "a-RWA", "a-GWA", "b-RGA", "b-RWA", "b-GWA")
NULL_KINDS = ("gaussian", "rotation")


@dataclass(frozen=True)
class LayerStatistics:
    r"""Rows of :math:`h_a, h_b, g_a, g_b` (each ``(R, d)``) and the weight :math:`W` (``(d_b, d_a)``), all float64;
    ``layer`` is the index of the linear map among the model's ``nn.Linear`` modules. A row is a sample, or, for
    a layer applied at every position of a sequence (``rows_per_sample`` > 1), one position of a sample:
    rows ``k*rows_per_sample .. (k+1)*rows_per_sample - 1`` belong to sample ``k``."""

    h_a: np.ndarray
    h_b: np.ndarray
    g_a: np.ndarray
    g_b: np.ndarray
    weight: np.ndarray
    layer: int
    rows_per_sample: int = 1

    @property
    def z_a(self) -> np.ndarray:
        return self.weight.T @ self.weight

    @property
    def z_b(self) -> np.ndarray:
        return self.weight @ self.weight.T

    def sample_rows(self, samples: np.ndarray) -> np.ndarray:
        """The row indices of the given samples, in order (for a bootstrap over samples, not positions)."""
        samples = np.asarray(samples)
        return (samples[:, None] * self.rows_per_sample + np.arange(self.rows_per_sample)).ravel()

    @property
    def n_samples(self) -> int:
        return self.h_a.shape[0] // self.rows_per_sample


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The model's ``nn.Linear`` modules in registration order."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)]


def _linear_layer(model: nn.Module, layer: int) -> tuple[nn.Linear, int]:
    """The ``layer``-th ``nn.Linear`` of the model (negative counts from the end) and its non-negative index;
    ``ValueError`` for a model without linear layers or an index that is not one of them."""
    layers = linear_layers(model)
    if not layers:
        raise ValueError("the model has no nn.Linear layer to measure")
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -len(layers) <= layer < len(layers):
        raise ValueError(f"layer: got {layer!r}, expected an index of the model's {len(layers)} linear layers "
                         f"(0..{len(layers) - 1}, or negative from the end)")
    return layers[layer], int(layer) % len(layers)


def layer_statistics(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: int) -> LayerStatistics:
    r"""Exact per-sample statistics of the ``layer``-th ``nn.Linear`` (0-based; negative counts from the end)
    under the cross-entropy loss :math:`\sum_i \ell(f(x_i), y_i)` (``reduction='sum'``, so each row's gradient
    is that sample's own, not divided by :math:`N`), with the model in eval mode.

    The model maps ``inputs`` (``N`` first) to logits ``(N, C)``, or ``(N, T, C)`` for a sequence model with
    ``targets`` ``(N, T)`` (the loss then sums over every position). A linear layer applied at every position
    sees ``(N, T, d)``; its rows are then the ``N*T`` positions (``rows_per_sample = T``), and the gradient of a
    row is the summed loss's gradient at that position. A forward pre-hook replaces the layer's input by a
    detached leaf that requires gradients and a forward hook keeps its output (passing a copy on, so
    that an in-place activation such as ``ReLU(inplace=True)`` cannot overwrite it); ``torch.autograd.grad`` then
    gives :math:`-g_a` and :math:`-g_b` without touching the parameters' ``.grad``. The model's training mode
    is restored afterwards.
    """
    module, index = _linear_layer(model, layer)
    if inputs.ndim < 1 or targets.ndim < 1 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs (N, ...) and targets (N, ...) must have the same number of rows; got "
                         f"{tuple(inputs.shape)} and {tuple(targets.shape)}")
    captured: dict[str, list[torch.Tensor]] = {"in": [], "out": []}

    def take_input(_module, args):
        leaf = args[0].detach().requires_grad_(True)
        captured["in"].append(leaf)
        return (leaf, *args[1:])

    def take_output(_module, _args, output):
        captured["out"].append(output)
        return output.clone()  # an in-place activation after the layer (ReLU(inplace=True)) must not overwrite h_b

    was_training = model.training
    handles = [module.register_forward_pre_hook(take_input), module.register_forward_hook(take_output)]
    try:
        model.eval()
        with torch.enable_grad():
            outputs = model(inputs)
            if len(captured["in"]) != 1:
                raise ValueError(f"linear layer {layer} ran {len(captured['in'])} times in one forward pass; "
                                 "layer_statistics needs a layer whose module is called exactly once (attention "
                                 "projections used through their weights are never called)")
            if outputs.shape[:-1] != targets.shape:
                raise ValueError(f"the model's logits {tuple(outputs.shape)} must be the targets' shape "
                                 f"{tuple(targets.shape)} plus a class dimension")
            loss = nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1),
                                               reduction="sum")
            grad_a, grad_b = torch.autograd.grad(loss, [captured["in"][0], captured["out"][0]])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    h_a, h_b = captured["in"][0], captured["out"][0]
    if h_a.shape[0] != inputs.shape[0] or h_a.ndim > 3:
        raise ValueError(f"layer {layer} sees inputs of shape {tuple(h_a.shape)}; expected (N, d) or (N, T, d) "
                         f"with N = {inputs.shape[0]}")
    rows_per_sample = h_a.shape[1] if h_a.ndim == 3 else 1

    def as_rows(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().to(torch.float64).reshape(-1, tensor.shape[-1]).numpy()

    return LayerStatistics(as_rows(h_a), as_rows(h_b), -as_rows(grad_a), -as_rows(grad_b),
                           module.weight.detach().cpu().to(torch.float64).numpy(), index, rows_per_sample)


def second_moment(x: np.ndarray, mode: str) -> np.ndarray:
    r"""Second-moment matrix of the rows of ``x`` (``(N, d)``), over the empirical distribution (divisor :math:`N`):

    * ``raw``: :math:`\frac1N\sum_i x_ix_i^\top`;
    * ``centred``: :math:`\frac1N\sum_i (x_i-\bar x)(x_i-\bar x)^\top`;
    * ``normalised``: the centred moment of the unit rows :math:`x_i/\|x_i\|` (rows of norm 0 stay 0).
    """
    if mode not in MODES:
        raise ValueError(f"mode: got {mode!r}, expected one of {list(MODES)}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x must be (samples, features) with at least one row; got shape {x.shape}")
    if mode == "normalised":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    if mode != "raw":
        x = x - x.mean(axis=0)
    return x.T @ x / x.shape[0]


def alignment(a: np.ndarray, b: np.ndarray, centre_entries: bool = True) -> float:
    r"""Entrywise alignment :math:`\alpha(A,B)=\langle A-\bar A,B-\bar B\rangle_F/(\|A-\bar A\|_F\|B-\bar B\|_F)`,
    :math:`\bar A` the mean entry: the Pearson correlation of all entries (both off-diagonal copies of a
    symmetric matrix count). With ``centre_entries=False`` it is the plain cosine :math:`\langle A,B\rangle_F/
    (\|A\|_F\|B\|_F)`. Invariant to positive scaling of either matrix."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"alignment needs two matrices of one shape; got {a.shape} and {b.shape}")
    if centre_entries:
        a, b = a - a.mean(), b - b.mean()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    if norm == 0:
        raise ValueError("alignment of a constant matrix is undefined")
    return float(np.sum(a * b) / norm)


def crh_matrices(stats: LayerStatistics, mode: str) -> dict[str, np.ndarray]:
    """``H_a, G_a, Z_a, H_b, G_b, Z_b``: the representation and gradient moments in ``mode`` and the weight Grams."""
    return {"H_a": second_moment(stats.h_a, mode), "G_a": second_moment(stats.g_a, mode), "Z_a": stats.z_a,
            "H_b": second_moment(stats.h_b, mode), "G_b": second_moment(stats.g_b, mode), "Z_b": stats.z_b}


_PAIRS = {"RGA": ("H", "G"), "RWA": ("H", "Z"), "GWA": ("G", "Z")}


def _pairs(matrices: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {relation: (matrices[f"{_PAIRS[relation[2:]][0]}_{relation[0]}"],
                       matrices[f"{_PAIRS[relation[2:]][1]}_{relation[0]}"]) for relation in RELATIONS}


def crh_alignments(stats: LayerStatistics, mode: str = "normalised", centre_entries: bool = True) -> dict[str, float]:
    r"""The six CRH alignments, keyed ``a-RGA`` :math:`\alpha(H_a,G_a)`, ``a-RWA`` :math:`\alpha(H_a,Z_a)`,
    ``a-GWA`` :math:`\alpha(G_a,Z_a)` and the same three on side ``b``."""
    return {relation: alignment(x, y, centre_entries) for relation, (x, y) in _pairs(crh_matrices(stats, mode)).items()}


def haar_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal fixed."""
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def null_alignments(stats: LayerStatistics, kind: str, draws: int = 20, seed: int = 0, mode: str = "normalised",
                    centre_entries: bool = True) -> dict[str, np.ndarray]:
    r"""Alignments of each relation :math:`(X, Y)` when :math:`Y` is replaced by an unrelated matrix, ``draws`` times:

    * ``gaussian``: the Gram a random layer would give, :math:`W'^\top W'` (side a) or :math:`W'W'^\top` (side b)
      with :math:`W'` a standard Gaussian matrix of :math:`W`'s shape;
    * ``rotation``: :math:`QYQ^\top` with Haar :math:`Q`, which keeps :math:`Y`'s spectrum and randomises its
      eigenvectors.
    """
    if kind not in NULL_KINDS:
        raise ValueError(f"kind: got {kind!r}, expected one of {list(NULL_KINDS)}")
    draws = positive_int("draws", draws)
    rng = np.random.default_rng(seed)
    pairs = _pairs(crh_matrices(stats, mode))
    out = {relation: np.empty(draws) for relation in RELATIONS}
    for k in range(draws):
        gaussian = rng.normal(size=stats.weight.shape)
        grams = {"a": gaussian.T @ gaussian, "b": gaussian @ gaussian.T}
        rotations = {side: haar_orthogonal(dim, rng) for side, dim in (("a", stats.weight.shape[1]),
                                                                        ("b", stats.weight.shape[0]))}
        for relation, (x, y) in pairs.items():
            side = relation[0]
            other = grams[side] if kind == "gaussian" else rotations[side] @ y @ rotations[side].T
            out[relation][k] = alignment(x, other, centre_entries)
    return out


@dataclass(frozen=True)
class DriftTerms:
    r"""The terms of T1 for one side (each a ``(d, d)`` matrix): ``decay`` :math:`-\eta(2\gamma-\eta\gamma^2)Z`,
    ``cross`` :math:`\eta(1-\eta\gamma)(C+C^\top)`, ``noise`` :math:`\frac{\eta^2}{B}\mathbb E(\|g_b\|^2h_ah_a^\top)`
    (side a) or :math:`\frac{\eta^2}{B}\mathbb E(\|h_a\|^2g_bg_b^\top)` (side b), and ``drift``
    :math:`\eta^2(1-\frac1B)M^\top M` (resp. :math:`MM^\top`); ``total`` is their sum, :math:`\mathbb E[\Delta Z]`."""

    decay: np.ndarray
    cross: np.ndarray
    noise: np.ndarray
    drift: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.decay + self.cross + self.noise + self.drift

    def relative_sizes(self) -> dict[str, float]:
        r""":math:`\|T\|_F/\sum_{T'}\|T'\|_F` for each term."""
        norms = {name: float(np.linalg.norm(getattr(self, name))) for name in ("decay", "cross", "noise", "drift")}
        scale = sum(norms.values())
        return {name: value / scale for name, value in norms.items()}


def expected_drift_terms(stats: LayerStatistics, lr: float, wd: float, batch: int | None) -> dict[str, DriftTerms]:
    r"""T1: the expected one-step change of :math:`Z_a=W^\top W` and :math:`Z_b=WW^\top` under the update
    :math:`W\leftarrow(1-\eta\gamma)W+\eta\hat M`, :math:`\hat M=\frac1B\sum_{k\le B}g_{b,i_k}h_{a,i_k}^\top` with
    :math:`i_1..i_B` drawn uniformly with replacement from the :math:`N` rows of ``stats`` (PyTorch's
    ``SGD(lr=η, weight_decay=γ)`` on the mean loss of the batch). ``batch=None`` is full-batch gradient
    descent (:math:`\hat M=M`), whose noise term is zero and whose drift is :math:`\eta^2M^\top M`.
    Returns ``{"a": DriftTerms, "b": DriftTerms}``; expectations are means over the rows."""
    if lr <= 0 or wd < 0:
        raise ValueError(f"lr must be positive and wd non-negative; got lr={lr}, wd={wd}")
    if batch is not None:
        batch = positive_int("batch", batch)  # None means full batch
    if stats.rows_per_sample != 1:
        raise ValueError("T1 needs one row per sample: a sequence sample's weight gradient sums over its "
                         f"{stats.rows_per_sample} positions, so its per-sample terms are not per-row terms")
    n = stats.h_a.shape[0]
    w, h_a, g_b = stats.weight, stats.h_a, stats.g_b
    m = g_b.T @ h_a / n
    decay_rate = -lr * (2 * wd - lr * wd ** 2)
    cross_rate = lr * (1 - lr * wd)
    c_a, c_b = w.T @ m, m @ w.T
    if batch is None:
        noise_a, noise_b = np.zeros_like(c_a), np.zeros_like(c_b)
        drift_share = 1.0
    else:
        noise_a = (h_a * (g_b ** 2).sum(axis=1, keepdims=True)).T @ h_a / n * lr ** 2 / batch
        noise_b = (g_b * (h_a ** 2).sum(axis=1, keepdims=True)).T @ g_b / n * lr ** 2 / batch
        drift_share = 1 - 1 / batch
    return {"a": DriftTerms(decay_rate * stats.z_a, cross_rate * (c_a + c_a.T), noise_a, lr ** 2 * drift_share * m.T @ m),
            "b": DriftTerms(decay_rate * stats.z_b, cross_rate * (c_b + c_b.T), noise_b, lr ** 2 * drift_share * m @ m.T)}


@dataclass(frozen=True)
class StationaryCheck:
    r"""The prediction of the stationarity identity on one side (see :func:`stationary_prediction`):
    ``balance`` :math:`\|M-\gamma W\|_F/\|\gamma W\|_F` (0 where the gradient balances the decay);
    ``alignment`` :math:`\alpha(Z,P)` and ``scale`` :math:`\mathrm{tr}P/\mathrm{tr}Z` for the predicted
    :math:`P` (both 1 where the prediction holds exactly); ``raw_alignment`` :math:`\alpha(Z,\mathbb E[hh^\top])`,
    what the prediction becomes when :math:`\|g_b\|^2` (resp. :math:`\|h_a\|^2`) is uncorrelated with
    :math:`hh^\top`."""

    balance: float
    alignment: float
    scale: float
    raw_alignment: float


def stationary_prediction(stats: LayerStatistics, wd: float) -> dict[str, StationaryCheck]:
    r"""Test, on raw moments, what T1 predicts where the full gradient balances the decay, :math:`M=\gamma W`.

    There :math:`C_a=W^\top M=\gamma Z_a`, :math:`M^\top M=\gamma^2Z_a`, and T1 reduces exactly to
    :math:`\mathbb E[\Delta Z_a]=\frac{\eta^2}B\big(\mathbb E[\|g_b\|^2h_ah_a^\top]-\gamma^2Z_a\big)`, so
    stationarity needs :math:`Z_a=P_a=\gamma^{-2}\mathbb E[\|g_b\|^2h_ah_a^\top]`; likewise
    :math:`Z_b=P_b=\gamma^{-2}\mathbb E[\|h_a\|^2g_bg_b^\top]`. Returns ``{"a": StationaryCheck, "b": ...}``."""
    if isinstance(wd, bool) or not wd > 0:
        raise ValueError(f"wd: got {wd!r}, expected a positive weight decay (the prediction divides by it)")
    if stats.rows_per_sample != 1:
        raise ValueError("the stationarity prediction needs one row per sample")
    n = stats.h_a.shape[0]
    w, h_a, g_b = stats.weight, stats.h_a, stats.g_b
    m = g_b.T @ h_a / n
    balance = float(np.linalg.norm(m - wd * w) / np.linalg.norm(wd * w))
    predicted = {"a": (h_a * (g_b ** 2).sum(axis=1, keepdims=True)).T @ h_a / n / wd ** 2,
                 "b": (g_b * (h_a ** 2).sum(axis=1, keepdims=True)).T @ g_b / n / wd ** 2}
    out = {}
    for side, z, rows in (("a", stats.z_a, h_a), ("b", stats.z_b, g_b)):
        p = predicted[side]
        out[side] = StationaryCheck(balance, alignment(z, p), float(np.trace(p) / np.trace(z)),
                                    alignment(z, second_moment(rows, "raw")))
    return out


def _check_side(side: str) -> None:
    if side not in ("a", "b"):
        raise ValueError(f"side: got {side!r}, expected 'a' (layer input) or 'b' (layer output)")


@dataclass(frozen=True)
class PropagationResiduals:
    r"""T2 on one layer: with :math:`W=\sum_i s_iu_iv_i^\top` and :math:`\lambda_i=s_i^2`, the largest
    :math:`|u_i^\top H_bu_i-\lambda_iv_i^\top H_av_i|/\|H_b\|_2` (``representation``) and
    :math:`|v_i^\top G_av_i-\lambda_iu_i^\top G_bu_i|/\|G_a\|_2` (``gradient``), centred moments; the slopes of
    the fits of ``log(u_i^T H_b u_i)`` and ``log(v_i^T H_a v_i)`` on ``log λ_i`` over the same indices
    (:math:`\lambda_i/\lambda_1\ge` ``floor`` and both quadratic forms positive)."""

    representation: float
    gradient: float
    slope_input: float
    slope_output: float
    points: int

    @property
    def slope_difference(self) -> float:
        return self.slope_output - self.slope_input


def _quadratic_forms(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    r""":math:`v_i^\top\,\mathrm{matrix}\,v_i` for every column :math:`v_i` of ``vectors``."""
    return np.einsum("ij,ik,kj->j", vectors, matrix, vectors)


def propagation_residuals(stats: LayerStatistics, floor: float = 1e-4) -> PropagationResiduals:
    """T2's identities measured on a layer (see :class:`PropagationResiduals`)."""
    h_a, h_b = second_moment(stats.h_a, "centred"), second_moment(stats.h_b, "centred")
    g_a, g_b = second_moment(stats.g_a, "centred"), second_moment(stats.g_b, "centred")
    u, s, vt = np.linalg.svd(stats.weight, full_matrices=False)
    lam, v = s ** 2, vt.T
    hb_u, ha_v = _quadratic_forms(u, h_b), _quadratic_forms(v, h_a)
    ga_v, gb_u = _quadratic_forms(v, g_a), _quadratic_forms(u, g_b)
    representation = float(np.max(np.abs(hb_u - lam * ha_v)) / np.linalg.norm(h_b, 2))
    gradient = float(np.max(np.abs(ga_v - lam * gb_u)) / np.linalg.norm(g_a, 2))
    keep = (lam >= floor * lam[0]) & (hb_u > 0) & (ha_v > 0)
    if keep.sum() < 2:
        raise ValueError("fewer than two eigen-directions above the floor: no slope to fit")
    x = np.log(lam[keep])
    slope_in = float(np.polyfit(x, np.log(ha_v[keep]), 1)[0])
    slope_out = float(np.polyfit(x, np.log(hb_u[keep]), 1)[0])
    return PropagationResiduals(representation, gradient, slope_in, slope_out, int(keep.sum()))


def _eigenbasis(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues in decreasing order and their eigenvectors (columns) of a symmetric matrix, in float64."""
    lam, vectors = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(lam)[::-1]
    return lam[order], vectors[:, order]


def eigen_profile(moment: np.ndarray, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Eigenvalues :math:`\lambda_i` of the symmetric ``gram`` in decreasing order (float64 ``eigh``) and the
    quadratic forms :math:`v_i^\top\,\mathrm{moment}\,v_i` along its eigenvectors."""
    moment, gram = np.asarray(moment, dtype=np.float64), np.asarray(gram, dtype=np.float64)
    if moment.shape != gram.shape or moment.ndim != 2 or moment.shape[0] != moment.shape[1]:
        raise ValueError(f"eigen_profile needs two square matrices of one shape; got {moment.shape} and {gram.shape}")
    lam, vectors = _eigenbasis(gram)
    return lam, _quadratic_forms(vectors, moment)


@dataclass(frozen=True)
class PowerLawFit:
    r"""Least-squares slope and intercept of ``log q`` on ``log λ``, its 95% bootstrap interval and the points
    used; its goodness of fit: ``r2`` (:math:`1-\sum_ir_i^2/\sum_i(y_i-\bar y)^2` with :math:`y_i=\log q_i`),
    ``residual_rms`` and ``residual_max`` (root-mean-square and largest :math:`|r_i|`, natural-log units); and
    ``off_diagonal``, :func:`off_diagonal_mass` of the moment in the eigenbasis of :math:`Z` over the same
    directions: 0 for an exact power law, which the diagonal fit alone cannot tell from a matrix that merely
    has that diagonal."""

    slope: float
    intercept: float
    low: float
    high: float
    points: int
    r2: float = float("nan")
    residual_rms: float = float("nan")
    residual_max: float = float("nan")
    off_diagonal: float = float("nan")


def off_diagonal_mass(moment: np.ndarray, gram: np.ndarray, keep: np.ndarray | None = None) -> float:
    r"""The share of the Frobenius norm of :math:`X'=V^\top XV` off its diagonal, :math:`\|X'-\mathrm{diag}X'\|_F/
    \|X'\|_F`, with :math:`V` the eigenvectors of the symmetric ``gram`` (decreasing eigenvalues) restricted to
    the boolean mask ``keep`` (all by default). It is 0 when :math:`X` is a function of :math:`Z` (such as
    :math:`cZ^p`) and up to 1 when :math:`X` has the same diagonal but other eigenvectors."""
    moment, gram = np.asarray(moment, dtype=np.float64), np.asarray(gram, dtype=np.float64)
    if moment.shape != gram.shape or moment.ndim != 2 or moment.shape[0] != moment.shape[1]:
        raise ValueError(f"off_diagonal_mass needs two square matrices of one shape; got {moment.shape} and "
                         f"{gram.shape}")
    _, vectors = _eigenbasis(gram)
    if keep is not None:
        vectors = vectors[:, np.asarray(keep, dtype=bool)]
    rotated = vectors.T @ moment @ vectors
    total = np.linalg.norm(rotated)
    if total == 0:
        raise ValueError("off_diagonal_mass of a matrix that vanishes on the kept directions is undefined")
    return float(np.linalg.norm(rotated - np.diag(np.diag(rotated))) / total)


def _fit(lam: np.ndarray, forms: np.ndarray, floor: float, min_points: int = 2) -> tuple[float, float, np.ndarray]:
    keep = (lam > 0) & (lam >= floor * lam[0]) & (forms > 0)
    if keep.sum() < min_points:
        raise ValueError(f"only {int(keep.sum())} eigen-directions above the floor {floor:g} with a positive "
                         f"quadratic form; a power-law fit needs at least {min_points}")
    slope, intercept = np.polyfit(np.log(lam[keep]), np.log(forms[keep]), 1)
    return float(slope), float(intercept), keep


def pah_exponent(stats: LayerStatistics, side: str, matrix: str = "H", floor: float = 1e-4, boots: int = 200,
                 seed: int = 0, mode: str = "centred", min_points: int = 10) -> PowerLawFit:
    r"""D4: the exponent :math:`\hat p` of :math:`X\approx cZ^p` (``matrix`` ``H`` or ``G`` on ``side`` a or b):
    the least-squares slope of :math:`\log(v_i^\top Xv_i)` on :math:`\log\lambda_i(Z)` over the eigenpairs with
    :math:`\lambda_i/\lambda_1\ge` ``floor`` (and a positive quadratic form), and the 2.5/97.5% percentiles of
    the slope over ``boots`` resamples of the samples (all positions of a resampled sequence come along;
    :math:`Z` is fixed by the weights), with the goodness of fit of :class:`PowerLawFit`. Fewer than
    ``min_points`` eigen-directions above the floor is an error: a slope through a few clustered points says
    little about a power law."""
    _check_side(side)
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 2:
        raise ValueError(f"min_points: got {min_points!r}, expected an integer >= 2")
    if matrix not in ("H", "G"):
        raise ValueError(f"matrix: got {matrix!r}, expected 'H' (representations) or 'G' (gradients)")
    if not 0 < floor < 1 or isinstance(boots, bool) or not isinstance(boots, int) or boots < 2:
        raise ValueError(f"floor must lie in (0, 1) and boots be an integer >= 2; got {floor}, {boots}")
    rows = {"H": {"a": stats.h_a, "b": stats.h_b}, "G": {"a": stats.g_a, "b": stats.g_b}}[matrix][side]
    if mode not in MODES:
        raise ValueError(f"mode: got {mode!r}, expected one of {list(MODES)}")
    lam, vectors = _eigenbasis(stats.z_a if side == "a" else stats.z_b)
    if mode == "normalised":  # normalising rows does not commute with the rotation: form the matrix
        source = rows

        def forms(sample: np.ndarray) -> np.ndarray:
            return _quadratic_forms(vectors, second_moment(sample, mode))
    else:  # v_i^T X v_i is the second moment of the i-th rotated coordinate
        source = rows @ vectors

        def forms(sample: np.ndarray) -> np.ndarray:
            centred = sample - sample.mean(axis=0) if mode == "centred" else sample
            return np.mean(centred ** 2, axis=0)

    values = forms(source)
    slope, intercept, keep = _fit(lam, values, floor, min_points)
    x, y = np.log(lam[keep]), np.log(values[keep])
    residuals = y - (slope * x + intercept)
    r2 = 1 - float(np.sum(residuals ** 2) / np.sum((y - y.mean()) ** 2))
    off = off_diagonal_mass(second_moment(rows, mode), stats.z_a if side == "a" else stats.z_b, keep)
    rng = np.random.default_rng(seed)
    n = stats.n_samples
    slopes = np.empty(boots)
    for k in range(boots):
        values = forms(source[stats.sample_rows(rng.integers(0, n, n))])
        use = keep & (values > 0)
        slopes[k] = np.polyfit(np.log(lam[use]), np.log(values[use]), 1)[0]
    low, high = np.percentile(slopes, [2.5, 97.5])
    return PowerLawFit(slope, intercept, float(low), float(high), int(keep.sum()), r2,
                       float(np.sqrt(np.mean(residuals ** 2))), float(np.max(np.abs(residuals))), off)


@dataclass
class AlignmentRun:
    """One training run measured at one layer: the trained ``model``; a ``history`` of
    ``{"step", "alignments" (the six, normalised), "weight_norm"}`` every ``log_every`` steps and at the end;
    ``mean_drift``, T1's terms averaged over the records from ``drift_from`` on, and ``realized_drift``, the
    actual mean change per step of :math:`Z_a` and :math:`Z_b` over the same stretch (both ``None`` if not asked)."""

    model: nn.Module
    layer: int
    history: list[dict]
    mean_drift: dict[str, DriftTerms] | None
    realized_drift: dict[str, np.ndarray] | None = None

    def mean_alignment(self, step: int | None = None) -> float:
        """Mean of the six normalised alignments at the record of ``step`` (the last record by default)."""
        records = [r for r in self.history if step is None or r["step"] == step]
        if not records:
            raise ValueError(f"no record at step {step}; recorded steps: {[r['step'] for r in self.history]}")
        return float(np.mean(list(records[-1]["alignments"].values())))

    def weight_norm_change(self, window: float = 0.1) -> float:
        r""":math:`|\,\|W_T\|_F-\|W_{T-w}\|_F|/\|W_T\|_F` over the last ``window`` fraction of the steps (nearest record)."""
        steps = np.array([r["step"] for r in self.history])
        earlier = self.history[int(np.argmin(np.abs(steps - steps[-1] * (1 - window))))]["weight_norm"]
        return abs(self.history[-1]["weight_norm"] - earlier) / self.history[-1]["weight_norm"]


def run_alignment(split: Split, *, lr: float, wd: float, batch: int | None, steps: int, layer: int, log_every: int,
                  widths=None, model: nn.Module | None = None, seed: int = 0, activation: str = "relu",
                  drift_from: int | None = None, drift_every: int | None = None,
                  device: str | torch.device = "cpu") -> AlignmentRun:
    r"""Train ``training.mlp(widths, activation=...)`` (initialised after ``torch.manual_seed(seed)``), or the
    given ``model`` (any classifier of ``split``'s inputs; ``widths`` must then be ``None``), with
    :func:`theorylab.training.train_sgd` (``batch=None``: full-batch gradient descent) on ``split``'s training
    set, measuring :func:`crh_alignments` (normalised moments) and :math:`\|W\|_F` of linear layer ``layer``
    on the whole training set every ``log_every`` steps and at the end. With ``drift_from``, T1's terms are
    also evaluated every ``drift_every`` steps (a divisor of ``log_every``; default ``log_every``) from that step
    on and averaged: under SGD the expected drift at one iterate is dominated by the fluctuating cross term,
    and stationarity can only hold as a time average."""
    from . import training

    drift_every = log_every if drift_every is None else drift_every
    log_every, drift_every = positive_int("log_every", log_every), positive_int("drift_every", drift_every)
    if log_every % drift_every:
        raise ValueError(f"drift_every ({drift_every}) must divide log_every ({log_every})")
    if (model is None) == (widths is None):
        raise ValueError("give exactly one of widths (an MLP is built) and model")
    if model is None:
        torch.manual_seed(seed)
        model = training.mlp(widths, activation=activation)
    model = model.to(device)
    _, index = _linear_layer(model, layer)
    data = Split(*(tensor.to(device) for tensor in (split.x_train, split.y_train, split.x_test, split.y_test)))
    every = drift_every if drift_from is not None else log_every
    drift_sum: dict[str, list[np.ndarray]] = {}
    counts = {"calls": 0, "drift": 0}
    grams: dict[str, tuple[int, np.ndarray]] = {}

    def record(current: nn.Module) -> dict:
        step = min(counts["calls"] * every, steps)  # train_sgd calls this every `every` steps and at the end
        counts["calls"] += 1
        measure = step % log_every == 0 or step == steps
        wants_drift = drift_from is not None and step >= drift_from
        if not (measure or wants_drift):
            return {}
        stats = layer_statistics(current, data.x_train, data.y_train, layer)
        if wants_drift:
            grams.setdefault("first", (step, stats.weight))
            grams["last"] = (step, stats.weight)
            for side, terms in expected_drift_terms(stats, lr, wd, batch).items():
                parts = [terms.decay, terms.cross, terms.noise, terms.drift]
                drift_sum[side] = parts if side not in drift_sum else [
                    total + part for total, part in zip(drift_sum[side], parts, strict=True)]
            counts["drift"] += 1
        if not measure:
            return {}
        return {"alignments": crh_alignments(stats), "weight_norm": float(np.linalg.norm(stats.weight))}

    result = training.train_sgd(model, data, batch=batch, lr=lr, wd=wd, steps=steps, seed=seed,
                                record_every=every, record=record)
    mean_drift = realized = None
    if counts["drift"]:
        mean_drift = {side: DriftTerms(*(part / counts["drift"] for part in parts)) for side, parts in drift_sum.items()}
        (first_step, first), (last_step, last) = grams["first"], grams["last"]
        span = max(last_step - first_step, 1)
        realized = {"a": (last.T @ last - first.T @ first) / span, "b": (last @ last.T - first @ first.T) / span}
    history = [entry for entry in result.history if "alignments" in entry]
    return AlignmentRun(model.cpu(), index, history, mean_drift, realized)


def enumerated_drift(stats: LayerStatistics, lr: float, wd: float, batch: int) -> dict[str, np.ndarray]:
    r"""Brute force of T1: the mean of :math:`W'^\top W'-W^\top W` and :math:`W'W'^\top-WW^\top` over all
    :math:`N^B` ordered batches (indices with replacement, each equally likely), with
    :math:`W'=(1-\eta\gamma)W+\frac{\eta}B\sum_kg_{b,i_k}h_{a,i_k}^\top`. Exponential in ``batch``: for checks on a
    few rows only (at most 10,000 batches)."""
    import itertools

    n = stats.h_a.shape[0]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1 or n ** batch > 10_000:
        raise ValueError(f"batch: got {batch!r}; enumeration needs a positive batch with N^B <= 10,000 (N = {n})")
    w = stats.weight
    outer = np.einsum("ni,nj->nij", stats.g_b, stats.h_a)
    total = {"a": np.zeros((w.shape[1], w.shape[1])), "b": np.zeros((w.shape[0], w.shape[0]))}
    for rows in itertools.product(range(n), repeat=batch):
        step = (1 - lr * wd) * w + lr * outer[list(rows)].mean(axis=0)
        total["a"] += step.T @ step - w.T @ w
        total["b"] += step @ step.T - w @ w.T
    return {side: value / n ** batch for side, value in total.items()}


def drift_diagnostics(run: AlignmentRun, final: LayerStatistics) -> dict[str, dict[str, float]]:
    r"""The averaged T1 terms of a run (:attr:`AlignmentRun.mean_drift`) read against the run's final layer
    ``final``, per side: each term's share (:meth:`DriftTerms.relative_sizes`), ``cross~Z``
    :math:`\alpha(\overline{C+C^\top},Z)`, ``noise~H`` :math:`\alpha(\overline{\text{noise}},\mathbb E[hh^\top])`
    (raw :math:`h_a` on side a, :math:`g_b` on side b; NaN without a noise term), ``total/decay``
    :math:`\|\overline{\mathbb E\Delta Z}\|_F/\|\overline{\text{decay}}\|_F` and ``realized/decay``, the same
    for the realized mean change per step. Averages of the terms are a heuristic: the quadratic terms of T1
    at the average iterate are not the averages of the terms."""
    if run.mean_drift is None or run.realized_drift is None:
        raise ValueError("the run averaged no drift terms: train it with drift_from")
    out = {}
    for side, terms in run.mean_drift.items():
        z = final.z_a if side == "a" else final.z_b
        source = second_moment(final.h_a if side == "a" else final.g_b, "raw")
        decay = np.linalg.norm(terms.decay)
        out[side] = {**terms.relative_sizes(), "cross~Z": alignment(terms.cross, z),
                     "noise~H": alignment(terms.noise, source) if terms.noise.any() else float("nan"),
                     "total/decay": float(np.linalg.norm(terms.total) / decay),
                     "realized/decay": float(np.linalg.norm(run.realized_drift[side]) / decay)}
    return out


def worst_propagation(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      layers: list[int]) -> dict[str, float]:
    """The largest T2 residuals (``representation``, ``gradient``) and slope error ``|difference - 1|``
    (``slope``) of :func:`propagation_residuals` over the given linear layers of one model."""
    worst = {"representation": 0.0, "gradient": 0.0, "slope": 0.0}
    for layer in layers:
        residual = propagation_residuals(layer_statistics(model, inputs, targets, layer))
        worst["representation"] = max(worst["representation"], residual.representation)
        worst["gradient"] = max(worst["gradient"], residual.gradient)
        worst["slope"] = max(worst["slope"], abs(residual.slope_difference - 1))
    return worst


def directions_above(gram: np.ndarray, floor: float = 1e-4) -> int:
    r"""How many eigenvalues of the symmetric ``gram`` satisfy :math:`\lambda_i\ge` ``floor`` :math:`\lambda_1`
    (float64 ``eigh``): the eigen-directions a PAH fit (:func:`pah_exponent`) can use at most."""
    lam, _ = _eigenbasis(np.asarray(gram, dtype=np.float64))
    if not 0 < floor < 1 or lam[0] <= 0:
        raise ValueError(f"floor must lie in (0, 1) and the Gram have a positive eigenvalue; got {floor}, {lam[0]}")
    return int(np.sum(lam >= floor * lam[0]))


HEAD_LAYERS = {"penultimate": 0, "output": 1}
"""The measured layers of :func:`resnet_alignment`'s two-layer head, by index in ``model.head``."""


def head_inputs(model: nn.Module, inputs: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """What a network with ``model.features``, ``model.pool`` and ``model.head`` (:mod:`theorylab.models`) feeds
    its head: ``pool(features(x))``, in eval mode, without gradients, in chunks of ``chunk`` rows, on the
    inputs' device. The model's training mode is restored afterwards."""
    chunk = positive_int("chunk", chunk)
    if not all(hasattr(model, part) for part in ("features", "pool", "head")):
        raise ValueError("head_inputs needs a model with .features, .pool and .head (theorylab.models)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model.pool(model.features(inputs[first:first + chunk]))
                              for first in range(0, len(inputs), chunk)])
    finally:
        model.train(was_training)


def head_statistics(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: int,
                    chunk: int = 1000) -> LayerStatistics:
    r""":func:`layer_statistics` of linear layer ``layer`` of ``model.head``, computed on the head alone from
    :func:`head_inputs`. Exact, not an approximation: the per-sample loss depends on the features only
    through the head, so :math:`h_a, h_b, g_a, g_b` are those of the whole network in eval mode, while the
    convolutional part runs in chunks without a graph (a full training set does not fit one backward
    pass)."""
    return layer_statistics(model.head, head_inputs(model, inputs, chunk), targets, layer)


@dataclass
class ResNetAlignmentRun:
    """One ResNet-18 run of :func:`resnet_alignment`: ``history`` rows (``epoch``, ``lr``, ``train_loss`` and
    ``alignments`` ``{layer name: the six}``) every ``record_every`` epochs and at the end; the six normalised
    and raw-centred alignments of each head layer at the end (``final``, ``final_centred``); the largest
    null alignment of each layer over both null kinds (``largest_null``; empty with ``null_draws=0``); the
    test accuracy, the steps and the training seconds. The model is not kept (a sweep's checkpoints stay
    small)."""

    history: list[dict]
    final: dict[str, dict[str, float]]
    final_centred: dict[str, dict[str, float]]
    largest_null: dict[str, float]
    test_accuracy: float
    steps: int
    seconds: float

    def mean_alignment(self, layer: str = "penultimate") -> float:
        """Mean of the six normalised alignments of ``layer`` at the end."""
        return float(np.mean(list(self.final[layer].values())))


def resnet_alignment(split: Split, *, lr: float, wd: float, batch: int, epochs: int, width: int = 64,
                     seed: int = 0, momentum: float = 0.0, augment: bool = False, record_every: int = 0,
                     measure: int = 10_000, null_draws: int = 0, autocast: torch.dtype | None = None
                     ) -> ResNetAlignmentRun:
    r"""Train ``models.resnet18(C, c, width, head=(8 * width,))`` (the paper's two-layer fully connected head:
    :math:`8w\to8w\to C`; initialised after ``torch.manual_seed(seed)``) on ``split``'s images with
    :func:`theorylab.training.train_epochs` (SGD at rate ``lr``, ``weight_decay=wd`` on every parameter,
    batches of ``batch``, ``epochs`` epochs, constant rate), where ``split`` lives. Every ``record_every``
    epochs and at the end, :func:`crh_alignments` (normalised moments) of both head layers (``penultimate``
    :math:`8w\to8w` and ``output`` :math:`8w\to C`, :data:`HEAD_LAYERS`) are measured on the first
    ``measure`` training images by :func:`head_statistics`, the statistics leaving the device once per
    measurement; at the end also the raw-centred alignments, ``null_draws`` draws of each null of
    :func:`null_alignments`, and the test accuracy."""
    from . import models, training

    measure = positive_int("measure", measure)
    if isinstance(null_draws, bool) or not isinstance(null_draws, int) or null_draws < 0:
        raise ValueError(f"null_draws: got {null_draws!r}, expected a non-negative integer")
    width = positive_int("width", width)
    torch.manual_seed(seed)
    model = models.resnet18(split.n_classes, split.x_train.shape[1], width, head=(8 * width,))
    model = model.to(split.x_train.device)
    x, y = split.x_train[:measure], split.y_train[:measure]

    def six(model: nn.Module) -> dict[str, dict[str, float]]:
        return {name: crh_alignments(head_statistics(model, x, y, layer)) for name, layer in HEAD_LAYERS.items()}

    result = training.train_epochs(model, split, batch=batch, lr=lr, wd=wd, epochs=epochs, momentum=momentum,
                                   augment=augment, seed=seed, autocast=autocast, record_every=record_every,
                                   record=lambda current: {"alignments": six(current)})
    final, centred, largest = {}, {}, {}
    for name, layer in HEAD_LAYERS.items():
        stats = head_statistics(model, x, y, layer)
        final[name], centred[name] = crh_alignments(stats), crh_alignments(stats, "centred")
        if null_draws:
            largest[name] = max(float(v.max()) for kind in NULL_KINDS
                                for v in null_alignments(stats, kind, null_draws, seed).values())
    accuracy = training.batched_accuracy(model, split.x_test, split.y_test)
    return ResNetAlignmentRun(result.history, final, centred, largest, accuracy, result.steps, result.seconds)
