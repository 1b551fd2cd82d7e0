r"""Neural collapse and few-shot transfer (chapter ``collapse-and-transfer``).

Class moments of a feature map, the class-distance normalised variance (CDNV) in its conventions, the
directional CDNV, NC1, nearest-class-centre (NCC) few-shot evaluation, the finite-shot NCC bound (T1, our
Cantelli bound), the directional bound of Luthra, Salunkhe and Galanti (T2, constants of their public
code), the decoupled and non-self supervised contrastive losses with the bound on their gap (T4), and
two-layer NNGP/NTK kernels with kernel NC1 (T5). Everything works on float64 NumPy arrays, except the
contrastive losses, which take torch tensors so that they can be trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

CONVENTIONS = ("ggh", "directional", "asymmetric")


def _check(features, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (samples, dim) and labels (samples,); got {features.shape}, {labels.shape}")
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError("need at least two classes")
    counts = np.array([(labels == c).sum() for c in classes])
    if counts.min() < 2:
        raise ValueError("every class needs at least two samples")
    return features, labels, classes


@dataclass(frozen=True)
class ClassMoments:
    r"""Per-class mean :math:`\mu_c`, covariance :math:`\Sigma_c` (unbiased), :math:`v_c=\mathrm{tr}\,\Sigma_c`,
    :math:`M_{4,c}=\mathbb E\|f-\mu_c\|^4` and the third-moment vector :math:`\mathbb E[(f-\mu_c)\|f-\mu_c\|^2]`."""

    classes: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    fourth: np.ndarray
    third: np.ndarray

    @property
    def variances(self) -> np.ndarray:
        return np.trace(self.covariances, axis1=1, axis2=2)


def class_moments(features, labels) -> ClassMoments:
    """:class:`ClassMoments` of ``features`` grouped by ``labels`` (D1)."""
    features, labels, classes = _check(features, labels)
    means, covariances, fourth, third = [], [], [], []
    for c in classes:
        rows = features[labels == c]
        mean = rows.mean(axis=0)
        centred = rows - mean
        norms = (centred**2).sum(axis=1)
        means.append(mean)
        covariances.append(centred.T @ centred / (len(rows) - 1))
        fourth.append(float((norms**2).mean()))
        third.append((centred * norms[:, None]).mean(axis=0))
    return ClassMoments(classes, np.array(means), np.array(covariances), np.array(fourth), np.array(third))


def _pairs(moments: ClassMoments):
    count = len(moments.classes)
    return [(i, j) for i in range(count) for j in range(count) if i != j]


def cdnv(features, labels, convention: str = "ggh") -> float:
    r"""The CDNV averaged over class pairs (D2): ``ggh`` :math:`\frac{v_i+v_j}{2d_{ij}^2}` over unordered
    pairs; ``directional`` :math:`\frac{v_i+v_j}{d_{ij}^2}` (twice ``ggh``); ``asymmetric``
    :math:`v_i/d_{ij}^2` over ordered pairs."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: got {convention!r}, expected one of {list(CONVENTIONS)}")
    moments = class_moments(features, labels)
    v, mu = moments.variances, moments.means
    values = []
    for i, j in _pairs(moments):
        d2 = float(((mu[i] - mu[j]) ** 2).sum())
        if convention == "asymmetric":
            values.append(v[i] / d2)
        elif i < j:
            values.append((v[i] + v[j]) / d2 / (2 if convention == "ggh" else 1))
    return float(np.mean(values))


def directional_cdnv_matrix(moments: ClassMoments) -> np.ndarray:
    r""":math:`\tilde V_{ij}=u_{ij}^\top\Sigma_iu_{ij}/d_{ij}^2` for every ordered pair (D3); zero on the diagonal."""
    count = len(moments.classes)
    out = np.zeros((count, count))
    for i, j in _pairs(moments):
        D = moments.means[j] - moments.means[i]
        d2 = float(D @ D)
        out[i, j] = float(D @ moments.covariances[i] @ D) / d2 / d2
    return out


def directional_cdnv(features, labels) -> float:
    """The directional CDNV averaged over ordered class pairs."""
    moments = class_moments(features, labels)
    matrix = directional_cdnv_matrix(moments)
    return float(matrix[~np.eye(len(matrix), dtype=bool)].mean())


def nc1(features, labels, form: str = "trace") -> float:
    r"""NC1 (D4): ``papyan`` :math:`\frac1C\mathrm{tr}(\Sigma_W\Sigma_B^+)` or ``trace``
    :math:`\mathrm{tr}\,\Sigma_W/\mathrm{tr}\,\Sigma_B`, with class-balanced within/between covariances."""
    features, labels, classes = _check(features, labels)
    means = np.array([features[labels == c].mean(axis=0) for c in classes])
    centred = means - means.mean(axis=0)
    if form == "trace":  # traces only: no d x d matrix, so wide random features stay cheap
        within = np.mean([((features[labels == c] - means[k]) ** 2).sum(axis=1).mean() for k, c in enumerate(classes)])
        return float(within / ((centred**2).sum() / len(classes)))
    within = np.mean([np.cov(features[labels == c].T, bias=True) for c in classes], axis=0)
    between = centred.T @ centred / len(classes)
    if form == "papyan":
        return float(np.trace(within @ np.linalg.pinv(between, rcond=1e-10)) / len(classes))
    raise ValueError(f"form: got {form!r}, expected 'trace' or 'papyan'")


def kernel_nc1(kernel: np.ndarray, labels) -> float:
    r"""Trace-ratio NC1 of the features behind a kernel, balanced classes (D4):
    :math:`\mathrm{tr}\Sigma_W=\frac1N\mathrm{tr}K-\frac1C\sum_c\frac{\mathbf 1_c^\top K\mathbf 1_c}{n_c^2}`,
    :math:`\mathrm{tr}\Sigma_B=\frac1C\sum_c\frac{\mathbf 1_c^\top K\mathbf 1_c}{n_c^2}-\frac{\mathbf 1^\top K\mathbf 1}{N^2}`."""
    kernel = np.asarray(kernel, dtype=np.float64)
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if kernel.shape != (labels.size, labels.size) or np.ptp(counts) != 0:
        raise ValueError("kernel_nc1 needs an (N, N) kernel and balanced classes")
    blocks = np.mean([kernel[np.ix_(labels == c, labels == c)].sum() / n**2 for c, n in zip(classes, counts, strict=True)])
    within = np.trace(kernel) / labels.size - blocks
    between = blocks - kernel.sum() / labels.size**2
    return float(within / between)


# ----------------------------------------------------------------------------------------------
# Nearest class centre


def ncc_predict(centres: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean) for each feature row."""
    distances = ((features[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return distances.argmin(axis=1)


def fewshot_error(class_features: list[np.ndarray], ways: int, shots: int, queries: int, episodes: int,
                  seed: int = 0) -> tuple[float, float]:
    """Mean and standard error of the NCC error over ``episodes`` ``ways``-way ``shots``-shot episodes drawn from
    ``class_features`` (one array of samples per class; support and queries disjoint)."""
    if ways < 2 or shots < 1 or queries < 1 or episodes < 1 or ways > len(class_features):
        raise ValueError(f"need 2 <= ways <= {len(class_features)} and positive shots, queries, episodes")
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(episodes):
        chosen = rng.choice(len(class_features), size=ways, replace=False)
        centres, query_rows, query_labels = [], [], []
        for k, c in enumerate(chosen):
            rows = class_features[c][rng.permutation(len(class_features[c]))[: shots + queries]]
            if len(rows) < shots + queries:
                raise ValueError(f"class {c} has fewer than shots + queries = {shots + queries} samples")
            centres.append(rows[:shots].mean(axis=0))
            query_rows.append(rows[shots:])
            query_labels += [k] * queries
        predicted = ncc_predict(np.array(centres), np.concatenate(query_rows))
        errors.append(float(np.mean(predicted != np.array(query_labels))))
    return float(np.mean(errors)), float(np.std(errors, ddof=1) / math.sqrt(episodes)) if episodes > 1 else 0.0


def ncc_pair_variance(moments: ClassMoments, i: int, j: int, shots: int) -> float:
    r"""T1's :math:`\sigma_{ij}^2=\mathrm{Var}\,X_{ij}`:
    :math:`D^\top\Sigma_iD+\frac{\mathrm{tr}\Sigma_i^2+\mathrm{tr}\Sigma_i\Sigma_j}{n}+\frac{D^\top\Sigma_jD}{n}
    +\sum_{c\in\{i,j\}}\frac{M_{4,c}-v_c^2+2(n-1)\mathrm{tr}\Sigma_c^2}{4n^3}-\frac{\kappa_j}{n^2}`, with
    :math:`D=\mu_i-\mu_j` and :math:`\kappa_j=\mathbb E_j[\langle e,D\rangle\|e\|^2]`."""
    n = shots
    S_i, S_j = moments.covariances[i], moments.covariances[j]
    D = moments.means[i] - moments.means[j]
    v = moments.variances
    quartic = sum((moments.fourth[c] - v[c] ** 2 + 2 * (n - 1) * np.trace(moments.covariances[c] @ moments.covariances[c]))
                  / (4 * n**3) for c in (i, j))
    kappa = float(moments.third[j] @ D)
    return float(D @ S_i @ D + (np.trace(S_i @ S_i) + np.trace(S_i @ S_j)) / n + D @ S_j @ D / n + quartic - kappa / n**2)


def ncc_pair_bound(moments: ClassMoments, i: int, j: int, shots: int) -> float:
    r"""T1: :math:`\Pr[i\to j]\le\sigma_{ij}^2/(\sigma_{ij}^2+t_{ij}^2)`, with
    :math:`t_{ij}=\frac{d_{ij}^2}{2}\big(1+\frac{v_j-v_i}{nd_{ij}^2}\big)`, which must be positive."""
    t = ncc_pair_margin(moments, i, j, shots)
    if t <= 0:
        raise ValueError(f"T1 needs t_ij > 0; for classes {i}, {j} with {shots} shots t_ij = {t:.3g}")
    variance = ncc_pair_variance(moments, i, j, shots)
    return variance / (variance + t**2)


def ncc_pair_margin(moments: ClassMoments, i: int, j: int, shots: int) -> float:
    r"""T1's :math:`t_{ij}=\frac{d_{ij}^2}{2}\big(1+\frac{v_j-v_i}{nd_{ij}^2}\big)`: how far the mean of
    :math:`X_{ij}` lies above the misclassification threshold :math:`-d_{ij}^2/2`."""
    if shots < 1:
        raise ValueError(f"shots: got {shots}, expected a positive integer")
    d2 = float(((moments.means[i] - moments.means[j]) ** 2).sum())
    v = moments.variances
    return d2 / 2 * (1 + (v[j] - v[i]) / (shots * d2))


def ncc_bound(moments: ClassMoments, shots: int, ways: int | None = None) -> float:
    r"""T1 for the :math:`C`-way task on all classes: :math:`\frac1C\sum_i\sum_{j\ne i}\Pr[i\to j]` bounded pair
    by pair; with ``ways`` = :math:`k`, its mean over uniformly random :math:`k`-class tasks, :math:`(k-1)` times
    the mean pairwise bound over ordered pairs. A pair with :math:`t_{ij}\le0` (a class so much wider than
    its neighbour that, with few shots, its own centre is expected nearer the neighbour's queries) gets
    the trivial bound :math:`\Pr[i\to j]\le1` (:func:`ncc_trivial_pairs` counts them)."""
    pairs = [ncc_pair_bound(moments, i, j, shots) if ncc_pair_margin(moments, i, j, shots) > 0 else 1.0
             for i, j in _pairs(moments)]
    ways = len(moments.classes) if ways is None else ways
    return (ways - 1) * float(np.mean(pairs))


def ncc_trivial_pairs(moments: ClassMoments, shots: int) -> int:
    r"""How many ordered pairs :func:`ncc_bound` bounds by 1 because T1's :math:`t_{ij}\le0` there."""
    return sum(ncc_pair_margin(moments, i, j, shots) <= 0 for i, j in _pairs(moments))


def plain_cdnv_bound(moments: ClassMoments, ways: int | None = None) -> float:
    r"""The many-shot CDNV bound with our constants: :math:`4(k-1)\,\mathrm{Avg}_{i<j}V^{\rm GGH}_{ij}` for
    :math:`k` = ``ways`` (default: all :math:`C` classes), pairs averaged over all classes."""
    v, mu, count = moments.variances, moments.means, len(moments.classes)
    values = [(v[i] + v[j]) / (2 * float(((mu[i] - mu[j]) ** 2).sum())) for i, j in _pairs(moments) if i < j]
    return 4 * ((count if ways is None else ways) - 1) * float(np.mean(values))


def directional_bound_paper(moments: ClassMoments, shots: int) -> float:
    r"""T2 (Luthra, Salunkhe, Galanti, Thm 4.1, constants of their public code), :math:`m\ge10`:
    :math:`\frac1C\sum_i\sum_{j\ne i}\frac{4\tilde V_{ij}+(\sqrt{A_T}+\sqrt{A_S}+\sqrt{A_Q})^2}
    {(1+\frac{v_j-v_i}{md_{ij}^2})^2}`, :math:`A_T=\frac4m(V^2+\frac V4)`, :math:`A_S=\frac Vm`,
    :math:`A_Q=\frac{\Theta+2(m-1)V^2}{m^3}`, :math:`V=\frac{v_i+v_j}{d_{ij}^2}`,
    :math:`\Theta=\frac{M_{4,i}+M_{4,j}}{d_{ij}^4}`."""
    m = shots
    if m < 10:
        raise ValueError(f"T2 needs m >= 10 shots, got {m}")
    directional = directional_cdnv_matrix(moments)
    v, mu = moments.variances, moments.means
    total = 0.0
    for i, j in _pairs(moments):
        d2 = float(((mu[i] - mu[j]) ** 2).sum())
        V = (v[i] + v[j]) / d2
        theta = (moments.fourth[i] + moments.fourth[j]) / d2**2
        a_t, a_s, a_q = 4 / m * (V**2 + V / 4), V / m, (theta + 2 * (m - 1) * V**2) / m**3
        total += (4 * directional[i, j] + (math.sqrt(a_t) + math.sqrt(a_s) + math.sqrt(a_q)) ** 2) \
            / (1 + (v[j] - v[i]) / (m * d2)) ** 2
    return total / len(moments.classes)


# ----------------------------------------------------------------------------------------------
# Contrastive losses


def _contrastive(z1: torch.Tensor, z2: torch.Tensor, tau: float, labels: torch.Tensor | None) -> torch.Tensor:
    if tau <= 0:
        raise ValueError(f"tau: got {tau}, expected a positive temperature")
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"views must be two (N, d) tensors of one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    similarity = z @ z.T / tau
    sample = torch.arange(2 * n) % n
    excluded = sample[:, None] == sample[None, :]  # every view of the anchor's own sample
    if labels is not None:
        both = torch.cat([labels, labels])
        excluded = excluded | (both[:, None] == both[None, :])
    positive = similarity[torch.arange(2 * n), (torch.arange(2 * n) + n) % (2 * n)]
    denominator = torch.logsumexp(similarity.masked_fill(excluded, -math.inf), dim=1)
    return (denominator - positive).mean()


def dcl_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    r"""Decoupled contrastive loss: for each of the :math:`2N` views, :math:`-\log\frac{e^{s(z,z^+)/\tau}}
    {\sum_{l\ne k}\sum_v e^{s(z,z_l^v)/\tau}}` with cosine :math:`s`, averaged."""
    return _contrastive(z1, z2, tau, None)


def nscl_loss(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The same with the denominator restricted to samples of other classes (NSCL)."""
    return _contrastive(z1, z2, tau, labels)


def dcl_nscl_gap_bound(labels, tau: float = 1.0) -> float:
    r"""T4: :math:`\log\big(1+e^{2/\tau}\max_c\frac{n_c-1}{N-n_c}\big)`."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return math.log1p(math.exp(2 / tau) * max((counts - 1) / (counts.sum() - counts)))


def equal_similarity_gap(labels) -> float:
    r"""T4's exact gap when all cross-sample similarities are equal: the mean over anchors of
    :math:`\log(1+\frac{n_c-1}{N-n_c})`."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return float(np.mean(np.log1p((counts[inverse] - 1) / (labels.size - counts[inverse]))))


# ----------------------------------------------------------------------------------------------
# Two-layer kernels


def _second_moments(X: np.ndarray):
    X = np.asarray(X, dtype=np.float64)
    S = X @ X.T / X.shape[1]
    diagonal = np.diag(S)
    return S, diagonal[:, None], diagonal[None, :]


def nngp_kernel(X: np.ndarray, activation: str = "relu") -> np.ndarray:
    r"""Two-layer NNGP :math:`K=\mathbb E[\sigma(u)\sigma(u')]`, :math:`(u,u')` Gaussian with covariance from
    :math:`S=xx'^\top/d_0`: erf (Williams) :math:`\frac2\pi\arcsin\frac{2S}{\sqrt{(1+2S_{xx})(1+2S_{x'x'})}}`;
    ReLU (Cho-Saul) :math:`\frac{\sqrt{S_{xx}S_{x'x'}}}{2\pi}(\sin\theta+(\pi-\theta)\cos\theta)`."""
    S, a, b = _second_moments(X)
    if activation == "erf":
        return 2 / np.pi * np.arcsin(np.clip(2 * S / np.sqrt((1 + 2 * a) * (1 + 2 * b)), -1, 1))
    if activation == "relu":
        norms = np.sqrt(a * b)
        theta = np.arccos(np.clip(S / norms, -1, 1))
        return norms / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    raise ValueError(f"activation: got {activation!r}, expected 'erf' or 'relu'")


def ntk_kernel(X: np.ndarray, activation: str = "relu") -> np.ndarray:
    r"""Two-layer NTK :math:`K+S\cdot\mathbb E[\sigma'(u)\sigma'(u')]`: erf
    :math:`\frac4\pi((1+2S_{xx})(1+2S_{x'x'})-4S^2)^{-1/2}`; ReLU :math:`\frac{\pi-\theta}{2\pi}`."""
    S, a, b = _second_moments(X)
    if activation == "erf":
        derivative = 4 / np.pi / np.sqrt(np.maximum((1 + 2 * a) * (1 + 2 * b) - 4 * S**2, 1e-300))
    elif activation == "relu":
        derivative = (np.pi - np.arccos(np.clip(S / np.sqrt(a * b), -1, 1))) / (2 * np.pi)
    else:
        raise ValueError(f"activation: got {activation!r}, expected 'erf' or 'relu'")
    return nngp_kernel(X, activation) + S * derivative


def train_contrastive(encoder: torch.nn.Module, population, classes: np.ndarray, *, steps: int, batch: int,
                      tau: float = 0.5, lr: float = 1e-3, eval_every: int = 50, eval_tau: float = 1.0,
                      seed: int = 0) -> list[dict[str, float]]:
    r"""SimCLR-style training of ``encoder`` with the DCL loss at temperature ``tau`` (Adam), on fresh pairs of
    views of ``batch`` samples per step drawn from ``classes`` of ``population``; every ``eval_every`` steps
    (and at the start and end) both losses and their gap are recorded at ``eval_tau`` on one fixed
    labelled batch, next to T4's bound for its labels."""
    if steps < 1 or batch < 2 or eval_every < 1:
        raise ValueError(f"steps >= 1, batch >= 2 and eval_every >= 1 required, got {steps}, {batch}, {eval_every}")
    per_class = max(1, batch // len(classes))
    fixed1, fixed2, fixed_labels = population.augment(classes, per_class, seed=seed + 10**6)
    fixed1, fixed2 = torch.from_numpy(fixed1), torch.from_numpy(fixed2)
    fixed_labels = torch.from_numpy(fixed_labels)
    bound = dcl_nscl_gap_bound(fixed_labels.numpy(), eval_tau)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    history = []

    def record(step):
        with torch.no_grad():
            z1, z2 = encoder(fixed1), encoder(fixed2)
            dcl, nscl = float(dcl_loss(z1, z2, eval_tau)), float(nscl_loss(z1, z2, fixed_labels, eval_tau))
        history.append({"step": step, "dcl": dcl, "nscl": nscl, "gap": dcl - nscl, "bound": bound})

    for step in range(steps):
        if step % eval_every == 0:
            record(step)
        v1, v2, _ = population.augment(classes, per_class, seed=seed + step)
        loss = dcl_loss(encoder(torch.from_numpy(v1)), encoder(torch.from_numpy(v2)), tau)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    record(steps)
    return history
