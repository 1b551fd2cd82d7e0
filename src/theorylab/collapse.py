r"""Neural collapse and few-shot transfer (chapter ``collapse-and-transfer``).

Class moments of a feature map, the class-distance normalised variance (CDNV) in its conventions, the
directional CDNV, NC1, nearest-class-centre (NCC) few-shot evaluation, the finite-shot NCC bound (T1, our
Cantelli bound), the directional bound of Luthra, Salunkhe and Galanti (T2, constants of their public
code), the decoupled and non-self supervised contrastive losses with the bound on their gap (T4), and
two-layer NNGP/NTK kernels with kernel NC1 (T5), and the ``full`` profile's transfer experiment from
CIFAR-100 source classes to held-out ones (:func:`cifar_transfer`). The geometry works on float64 NumPy
arrays; the contrastive losses, the trained networks, :func:`embed` and :func:`fewshot_error_device` take
torch tensors and run on their device.
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


def ncc_limit_bound(moments: ClassMoments, ways: int | None = None) -> float:
    r"""T1's many-shot limit: :math:`(k-1)\,\mathrm{Avg}_{i\ne j}\frac{4\tilde V_{ij}}{1+4\tilde V_{ij}}` over
    ordered pairs, with :math:`k` = ``ways`` (default: all :math:`C` classes). T2 tends instead to
    :math:`(k-1)\,\mathrm{Avg}_{i\ne j}4\tilde V_{ij}` (:func:`directional_limit`), which is larger."""
    values = 4 * directional_cdnv_matrix(moments)
    off = ~np.eye(len(values), dtype=bool)
    ways = len(moments.classes) if ways is None else ways
    return (ways - 1) * float((values[off] / (1 + values[off])).mean())


def directional_limit(moments: ClassMoments, ways: int | None = None) -> float:
    r"""T2's many-shot limit :math:`(k-1)\,\mathrm{Avg}_{i\ne j}4\tilde V_{ij}` over ordered pairs."""
    values = 4 * directional_cdnv_matrix(moments)
    off = ~np.eye(len(values), dtype=bool)
    ways = len(moments.classes) if ways is None else ways
    return (ways - 1) * float(values[off].mean())


def _normal_cdf(z: np.ndarray | float) -> np.ndarray | float:
    from scipy.special import ndtr

    return ndtr(z)


def gaussian_ncc_error(mean0, mean1, scale, shots: int | None = None, draws: int = 20_000,
                       seed: int = 0) -> tuple[float, float]:
    r"""Expected 2-way NCC error (balanced queries) for classes :math:`N(\mu_0,\mathrm{diag}\,s^2)` and
    :math:`N(\mu_1,\mathrm{diag}\,s^2)`, and its Monte Carlo standard error.

    With exact centres (``shots=None``) the rule splits space by the hyperplane through the midpoint
    orthogonal to :math:`D=\mu_1-\mu_0`, so the error is :math:`\Phi\big(-\frac{\|D\|}{2\sqrt{u^\top\Sigma u}}\big)`,
    :math:`u=D/\|D\|` (the Bayes error when the classes share :math:`\Sigma` and :math:`D` is an eigenvector).
    With :math:`m` shots the centres are :math:`\hat\mu_c=\mu_c+s\odot g_c/\sqrt m`; given them a query of
    class 0 is misclassified iff :math:`\langle f,w\rangle>c` with :math:`w=\hat\mu_1-\hat\mu_0`,
    :math:`c=\frac12(\|\hat\mu_1\|^2-\|\hat\mu_0\|^2)`, which has probability
    :math:`\Phi\big((\langle\mu_0,w\rangle-c)/\|s\odot w\|\big)` (class 1 symmetrically); this conditional
    probability is averaged over ``draws`` draws of the centres."""
    mean0, mean1, scale = (np.asarray(v, dtype=np.float64) for v in (mean0, mean1, scale))
    if not mean0.shape == mean1.shape == scale.shape or mean0.ndim != 1 or np.any(scale <= 0):
        raise ValueError("mean0, mean1 and scale must be vectors of one length, scale positive")
    if shots is None:
        D = mean1 - mean0
        u = D / np.linalg.norm(D)
        return float(_normal_cdf(-np.linalg.norm(D) / 2 / math.sqrt(float(u**2 @ scale**2)))), 0.0
    if shots < 1 or draws < 2:
        raise ValueError(f"need shots >= 1 and draws >= 2, got {shots}, {draws}")
    rng = np.random.default_rng(seed)
    c0 = mean0 + scale * rng.normal(size=(draws, mean0.size)) / math.sqrt(shots)
    c1 = mean1 + scale * rng.normal(size=(draws, mean0.size)) / math.sqrt(shots)
    w = c1 - c0
    threshold = 0.5 * ((c1**2).sum(1) - (c0**2).sum(1))
    spread = np.sqrt((scale**2 * w**2).sum(1))
    errors = 0.5 * (_normal_cdf((w @ mean0 - threshold) / spread) + _normal_cdf((threshold - w @ mean1) / spread))
    return float(errors.mean()), float(errors.std(ddof=1) / math.sqrt(draws))


def pairwise_ncc_error(class_features: list[np.ndarray], shots: int, queries: int, episodes: int,
                       seed: int = 0) -> np.ndarray:
    r"""Matrix :math:`E_{ij}` of 2-way NCC errors :math:`\Pr[i\to j]`: the fraction of queries of class
    :math:`i` nearer the ``shots``-shot centre of class :math:`j` than that of their own class, averaged over
    ``episodes`` draws of disjoint support and query sets of every class (zero diagonal)."""
    count = len(class_features)
    if count < 2 or shots < 1 or queries < 1 or episodes < 1:
        raise ValueError("need two classes and positive shots, queries, episodes")
    if min(len(f) for f in class_features) < shots + queries:
        raise ValueError(f"every class needs shots + queries = {shots + queries} samples")
    rng = np.random.default_rng(seed)
    total = np.zeros((count, count))
    for _ in range(episodes):
        picks = [f[rng.permutation(len(f))[: shots + queries]] for f in class_features]
        centres = np.array([p[:shots].mean(axis=0) for p in picks])
        query = np.stack([p[shots:] for p in picks])  # (classes, queries, dim)
        distances = ((query[:, :, None, :] - centres[None, None]) ** 2).sum(axis=3)  # (i, q, j)
        own = distances[np.arange(count), :, np.arange(count)]  # (i, q)
        total += (distances < own[:, :, None]).mean(axis=1)
    return total / episodes


def rank_correlation(x, y) -> float:
    r"""Spearman's rank correlation: Pearson's correlation of the ranks (ties get their mean rank)."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 3:
        raise ValueError("rank_correlation needs two arrays of one size, at least 3")
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    """The off-diagonal entries of a square matrix, row by row."""
    matrix = np.asarray(matrix)
    return matrix[~np.eye(len(matrix), dtype=bool)]


def linear_cka(A, B) -> float:
    r"""Linear CKA (Kornblith et al. 2019) of two feature matrices on the same rows:
    :math:`\frac{\|B_c^\top A_c\|_F^2}{\|A_c^\top A_c\|_F\|B_c^\top B_c\|_F}` with column-centred :math:`A_c,B_c`;
    1 for features equal up to rotation and isotropic scaling, 0 for orthogonal ones."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(f"linear_cka needs two (samples, dim) arrays with one row count, got {A.shape}, {B.shape}")
    A, B = A - A.mean(axis=0), B - B.mean(axis=0)
    return float(np.linalg.norm(B.T @ A) ** 2 / (np.linalg.norm(A.T @ A) * np.linalg.norm(B.T @ B)))


def plain_cdnv_bound(moments: ClassMoments, ways: int | None = None) -> float:
    r"""The many-shot CDNV bound with our constants: :math:`4(k-1)\,\mathrm{Avg}_{i<j}V^{\rm GGH}_{ij}` for
    :math:`k` = ``ways`` (default: all :math:`C` classes), pairs averaged over all classes."""
    v, mu, count = moments.variances, moments.means, len(moments.classes)
    values = [(v[i] + v[j]) / (2 * float(((mu[i] - mu[j]) ** 2).sum())) for i, j in _pairs(moments) if i < j]
    return 4 * ((count if ways is None else ways) - 1) * float(np.mean(values))


def directional_bound_paper(moments: ClassMoments, shots: int, ways: int | None = None) -> float:
    r"""T2 (Luthra, Salunkhe, Galanti, Thm 4.1, constants of their public code), :math:`m\ge10`:
    :math:`\frac1C\sum_i\sum_{j\ne i}\frac{4\tilde V_{ij}+(\sqrt{A_T}+\sqrt{A_S}+\sqrt{A_Q})^2}
    {(1+\frac{v_j-v_i}{md_{ij}^2})^2}`, :math:`A_T=\frac4m(V^2+\frac V4)`, :math:`A_S=\frac Vm`,
    :math:`A_Q=\frac{\Theta+2(m-1)V^2}{m^3}`, :math:`V=\frac{v_i+v_j}{d_{ij}^2}`,
    :math:`\Theta=\frac{M_{4,i}+M_{4,j}}{d_{ij}^4}`. With ``ways`` = :math:`k`: its mean over uniformly
    random :math:`k`-class tasks, :math:`(k-1)` times the mean pair term over ordered pairs (as
    :func:`ncc_bound`)."""
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
    if ways is not None:
        return (ways - 1) * total / len(_pairs(moments))
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
    index = torch.arange(2 * n, device=z.device)
    sample = index % n
    excluded = sample[:, None] == sample[None, :]  # every view of the anchor's own sample
    if labels is not None:
        both = torch.cat([labels, labels]).to(z.device)
        excluded = excluded | (both[:, None] == both[None, :])
    positive = similarity[index, (index + n) % (2 * n)]
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
                      seed: int = 0, loss: str = "dcl") -> list[dict[str, float]]:
    r"""SimCLR-style training of ``encoder`` with the DCL loss (or ``loss="nscl"``, which uses the labels) at
    temperature ``tau`` (Adam), on fresh pairs of
    views of ``batch`` samples per step drawn from ``classes`` of ``population``; every ``eval_every`` steps
    (and at the start and end) both losses and their gap are recorded at ``eval_tau`` on one fixed
    labelled batch, next to T4's bound for its labels (``bound``) and the exact equal-similarity gap of
    :func:`equal_similarity_gap` for the same finite batch (``equal``). Runs on the encoder's device; the
    views are drawn on the host and moved there."""
    if loss not in ("dcl", "nscl"):
        raise ValueError(f"loss: got {loss!r}, expected 'dcl' or 'nscl'")
    if steps < 1 or batch < 2 or eval_every < 1:
        raise ValueError(f"steps >= 1, batch >= 2 and eval_every >= 1 required, got {steps}, {batch}, {eval_every}")
    per_class = max(1, batch // len(classes))
    fixed1, fixed2, fixed_labels = population.augment(classes, per_class, seed=seed + 10**6)
    device = next(encoder.parameters()).device
    bound = dcl_nscl_gap_bound(fixed_labels, eval_tau)
    equal = equal_similarity_gap(fixed_labels)
    fixed1, fixed2 = torch.from_numpy(fixed1).to(device), torch.from_numpy(fixed2).to(device)
    fixed_labels = torch.from_numpy(fixed_labels).to(device)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    history = []

    def record(step):
        with torch.no_grad():
            z1, z2 = encoder(fixed1), encoder(fixed2)
            dcl, nscl = float(dcl_loss(z1, z2, eval_tau)), float(nscl_loss(z1, z2, fixed_labels, eval_tau))
        history.append({"step": step, "dcl": dcl, "nscl": nscl, "gap": dcl - nscl, "bound": bound,
                        "equal": equal})

    for step in range(steps):
        if step % eval_every == 0:
            record(step)
        v1, v2, labels = population.augment(classes, per_class, seed=seed + step)
        z1, z2 = encoder(torch.from_numpy(v1).to(device)), encoder(torch.from_numpy(v2).to(device))
        value = (dcl_loss(z1, z2, tau) if loss == "dcl"
                 else nscl_loss(z1, z2, torch.from_numpy(labels).to(device), tau))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    record(steps)
    return history


def contrastive_pair(make_encoder, population, classes: np.ndarray, *, steps: int, batch: int, tau: float = 0.5,
                     eval_every: int = 50, seed: int = 0, device: torch.device | str = "cpu") -> dict:
    r"""Train two encoders from one initialisation (``make_encoder()`` after ``torch.manual_seed(seed)``) on the
    same sequence of batches, one with DCL and one with NSCL (:func:`train_contrastive`), and compare their
    features on a fixed batch of 512 held-out samples with :func:`linear_cka`. Returns the DCL history
    (``history``), the final NSCL-trained losses (``nscl history``), ``cka`` between the two trained
    encoders and ``cka to init``, the DCL encoder's CKA with the untrained one (how far training moved it).
    The encoders are built on the host (their initialisation does not depend on ``device``), then trained and
    evaluated on ``device``."""
    torch.manual_seed(seed)
    dcl_encoder = make_encoder().to(device)
    nscl_encoder, init_encoder = make_encoder().to(device), make_encoder().to(device)
    nscl_encoder.load_state_dict(dcl_encoder.state_dict())
    init_encoder.load_state_dict(dcl_encoder.state_dict())
    runs = {kind: train_contrastive(net, population, classes, steps=steps, batch=batch, tau=tau,
                                    eval_every=eval_every, seed=seed, loss=kind)
            for kind, net in (("dcl", dcl_encoder), ("nscl", nscl_encoder))}
    probe, _, _ = population.augment(classes, max(1, 512 // len(classes)), seed=seed + 2 * 10**6)
    with torch.no_grad():
        probe = torch.from_numpy(probe).to(device)
        features = {name: net(probe).double().cpu().numpy()
                    for name, net in (("dcl", dcl_encoder), ("nscl", nscl_encoder), ("init", init_encoder))}
    return {"history": runs["dcl"], "nscl history": runs["nscl"], "cka": linear_cka(features["dcl"], features["nscl"]),
            "cka to init": linear_cka(features["dcl"], features["init"])}


def train_two_layer(x: np.ndarray, labels: np.ndarray, *, width: int = 512, activation: str = "erf",
                    steps: int = 500, lr: float = 0.5, seed: int = 0,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    r"""Train :math:`x\mapsto a^\top\sigma(Wx)/\sqrt{\text{width}}` (two logits, :math:`W` Gaussian of variance
    :math:`1/d_0`, the NNGP scaling of :func:`nngp_kernel`, no biases) by full-batch gradient descent on
    cross-entropy, both layers, at rate ``lr``; returns the trace-ratio NC1 (:func:`nc1`) of the hidden
    features :math:`\sigma(Wx)` before (``init``, a random-feature estimate of the NNGP's) and after
    (``trained``) training, and the final training ``accuracy``. The weights are drawn on the host, then
    moved to ``device`` with the data; NC1 is computed on a host copy of the features."""
    acts = {"erf": torch.erf, "relu": torch.relu}
    if activation not in acts or width < 1 or steps < 0 or lr <= 0:
        raise ValueError(f"activation in {list(acts)}, width >= 1, steps >= 0, lr > 0 required")
    generator = torch.Generator().manual_seed(seed)
    X, y = torch.from_numpy(np.asarray(x, dtype=np.float64)), torch.from_numpy(np.asarray(labels)).long()
    W = (torch.randn(X.shape[1], width, generator=generator, dtype=torch.float64) / math.sqrt(X.shape[1]))
    a = torch.randn(width, 2, generator=generator, dtype=torch.float64)
    X, y, W, a = (t.to(device) for t in (X, y, W, a))
    W.requires_grad_(True)
    a.requires_grad_(True)
    sigma = acts[activation]
    out = {"init": nc1(sigma(X @ W).detach().cpu().numpy(), labels)}
    optimizer = torch.optim.SGD([W, a], lr=lr)
    for _ in range(steps):
        value = torch.nn.functional.cross_entropy(sigma(X @ W) @ a / math.sqrt(width), y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        hidden = sigma(X @ W)
        out["accuracy"] = float(((hidden @ a).argmax(1) == y).double().mean())
    out["trained"] = nc1(hidden.cpu().numpy(), labels)
    return out


# ----------------------------------------------------------------------------------------------
# The chapter's experiments (loops kept out of the notebook)


def transfer_row(features: np.ndarray, labels: np.ndarray, *, pool: int = 60, episodes: int = 100,
                 pair_episodes: int = 20, seed: int = 0) -> dict:
    r"""Everything the chapter measures on target-class features: the first ``pool`` samples of each class
    feed the 5-way 5-shot episodes (:func:`fewshot_error`, 50 queries) and the 5-shot pairwise errors
    (:func:`pairwise_ncc_error`); the remaining samples give the moments for T1 (:func:`ncc_bound`), its
    many-shot limit, T2's limit and the plain CDNV bound, and the many-shot pairwise errors (centres from
    all but 60 samples of a class, 60 queries). ``rho`` is Spearman's correlation over ordered target pairs
    of :math:`\tilde V_{ij}` with the 5-shot pairwise error; ``rho T1`` that of T1's pair bound."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per_class = [features[labels == c] for c in classes]
    episode_pool = [f[:pool] for f in per_class]
    moments = class_moments(np.concatenate([f[pool:] for f in per_class]),
                            np.concatenate([np.full(len(f) - pool, c) for c, f in zip(classes, per_class, strict=True)]))
    error, se = fewshot_error(episode_pool, 5, 5, 50, episodes, seed=seed + 3)
    pair5 = pairwise_ncc_error(episode_pool, 5, pool - 5, pair_episodes, seed=seed + 4)
    many = min(len(f) for f in per_class) - 60
    pair_many = pairwise_ncc_error(per_class, many, 60, 2, seed=seed + 5)
    directional = directional_cdnv_matrix(moments)
    pair_bounds = np.zeros((len(classes), len(classes)))
    for i, j in _pairs(moments):
        pair_bounds[i, j] = ncc_pair_bound(moments, i, j, 5) if ncc_pair_margin(moments, i, j, 5) > 0 else 1.0
    return {"target CDNV": cdnv(features, labels), "directional": directional_cdnv(features, labels),
            "NC1 trace": nc1(features, labels), "NC1 papyan": nc1(features, labels, "papyan"),
            "accuracy": 1 - error, "error": error, "se": se, "T1": ncc_bound(moments, 5, ways=5),
            "T1 trivial pairs": ncc_trivial_pairs(moments, 5), "T1 limit": ncc_limit_bound(moments, ways=5),
            "T2 limit": directional_limit(moments, ways=5), "CDNV bound": plain_cdnv_bound(moments, ways=5),
            "pair error 5": float(off_diagonal(pair5).mean()), "pair error many": float(off_diagonal(pair_many).mean()),
            "rho": rank_correlation(off_diagonal(directional), off_diagonal(pair5)),
            "rho T1": rank_correlation(off_diagonal(pair_bounds), off_diagonal(pair5))}


def train_source_encoder(population, n_classes: int, *, steps: int, seed: int = 0, per_class: int = 60,
                         device: torch.device | str = "cpu"):
    r"""Draw ``n_classes`` source classes (``per_class`` training and as many fresh test samples each), train a
    64-256-256-64 ReLU encoder with a linear head by SGD (rate 0.05, momentum 0.9, weight decay
    :math:`5\cdot10^{-4}`, batches of 128, ``steps`` steps) on ``device`` and return ``(features_of, source)``:
    the map from (host) inputs to float64 host features, and the source train and test CDNV (GGH convention)."""
    from torch import nn

    from . import training
    from .data import Split

    sources = population.draw_classes(n_classes, seed=seed + n_classes)
    train_xy = population.sample(sources, per_class, seed=seed + n_classes + 1)
    test_xy = population.sample(sources, per_class, seed=seed + n_classes + 2)
    data = Split(*(torch.from_numpy(v).to(device) for v in (*train_xy, *test_xy)))
    torch.manual_seed(seed)
    encoder = nn.Sequential(training.mlp([64, 256, 256, 64]), nn.ReLU())
    model = nn.Sequential(encoder, nn.Linear(64, n_classes)).to(device)
    training.train_sgd(model, data, batch=128, lr=0.05, wd=5e-4, steps=steps, seed=seed, momentum=0.9)

    def features_of(x):
        with torch.no_grad():
            return encoder(torch.from_numpy(x).to(device)).double().cpu().numpy()

    return features_of, {"train CDNV": cdnv(features_of(train_xy[0]), train_xy[1]),
                         "test CDNV": cdnv(features_of(test_xy[0]), test_xy[1])}


# ----------------------------------------------------------------------------------------------
# The full profile: a ResNet-18 trained on CIFAR-100 source classes, few-shot transfer to held-out classes


CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
    "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
    "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television",
    "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm")
"""CIFAR-100's fine classes in the order of its labels (alphabetical, as in the set's ``meta`` file)."""

CIFAR_FS_TEST = ("baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain",
                 "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale",
                 "woman", "worm")
"""The 20 test classes of CIFAR-FS (Bertinetto et al. 2019); its other 80 are 64 training and 16
validation classes."""


def class_split(n_classes: int = 100, n_target: int = 20, seed: int = 0,
                kind: str = "random") -> tuple[np.ndarray, np.ndarray]:
    r"""Source and held-out target classes among the class ids :math:`0,\dots,C-1`, both sorted.

    ``kind="random"``: a seeded split, the target classes being the first ``n_target`` entries of
    ``numpy.random.default_rng(seed).permutation(n_classes)``. ``kind="cifar-fs"`` (CIFAR-100 only): the
    20 test classes of CIFAR-FS (:data:`CIFAR_FS_TEST`) are the targets and its 64 training and 16
    validation classes together the source; ``n_target`` and ``seed`` are then unused."""
    if kind == "cifar-fs":
        if n_classes != len(CIFAR100_CLASSES):
            raise ValueError(f"the CIFAR-FS split needs CIFAR-100's 100 classes, got {n_classes}")
        target = np.array(sorted(CIFAR100_CLASSES.index(name) for name in CIFAR_FS_TEST))
        return np.setdiff1d(np.arange(n_classes), target), target
    if kind != "random":
        raise ValueError(f"kind: got {kind!r}, expected 'random' or 'cifar-fs'")
    if not 1 <= n_target < n_classes:
        raise ValueError(f"need 1 <= n_target < n_classes, got {n_target}, {n_classes}")
    order = np.random.default_rng(seed).permutation(n_classes)
    return np.sort(order[n_target:]), np.sort(order[:n_target])


def split_by_classes(data, source, target):
    r"""``(source_split, target_x, target_y)``: the training and test images of the ``source`` classes as a
    :class:`~theorylab.data.Split` with labels renumbered :math:`0,\dots,|\text{source}|-1` in the order of
    ``source``; and the images of the ``target`` classes, training and test sets pooled (no target image is
    ever trained on), with labels :math:`0,\dots,|\text{target}|-1`. Everything stays on the data's device."""
    from .data import Split

    source, target = np.asarray(source), np.asarray(target)
    if np.intersect1d(source, target).size:
        raise ValueError("source and target classes must be disjoint")
    device = data.y_train.device
    size = int(max(source.max(), target.max(), data.y_train.max(), data.y_test.max())) + 1

    def renumber(labels: torch.Tensor, classes: np.ndarray):
        code = torch.full((size,), -1, dtype=torch.long, device=device)
        code[torch.as_tensor(classes, device=device)] = torch.arange(len(classes), device=device)
        new = code[labels]
        return new >= 0, new

    (keep_train, y_train), (keep_test, y_test) = renumber(data.y_train, source), renumber(data.y_test, source)
    source_split = Split(data.x_train[keep_train], y_train[keep_train], data.x_test[keep_test], y_test[keep_test])
    x, y = torch.cat([data.x_train, data.x_test]), torch.cat([data.y_train, data.y_test])
    keep, new = renumber(y, target)
    return source_split, x[keep], new[keep]


@torch.no_grad()
def embed(model: torch.nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Penultimate features ``model.pool(model.features(x))`` in eval mode, in batches of ``batch``, on the
    device of ``x`` (float32, one row per image)."""
    model.eval()
    return torch.cat([model.pool(model.features(x[k:k + batch])).float() for k in range(0, len(x), batch)])


def usable_shots(shots, smallest: int, queries: int) -> tuple[list[int], int]:
    r"""What classes of ``smallest`` samples allow: :math:`q=\max(1,\min(\text{queries},\lfloor s/2\rfloor))`
    queries per class, and each shot count :math:`m` capped at :math:`s-q` (so that support and queries
    stay disjoint); :math:`s` = ``smallest`` must be at least 2."""
    if smallest < 2 or queries < 1 or min(shots) < 1:
        raise ValueError(f"need smallest >= 2 samples, queries >= 1 and positive shots; got {smallest}, {queries}")
    q = max(1, min(queries, smallest // 2))
    return [min(m, smallest - q) for m in shots], q


def fewshot_error_device(features: torch.Tensor, labels: torch.Tensor, ways: int, shots: int, queries: int,
                         episodes: int, seed: int = 0) -> tuple[float, float]:
    r""":func:`fewshot_error` on features held on a device: mean and standard error of the NCC error over
    ``episodes`` ``ways``-way ``shots``-shot episodes. Each episode draws ``ways`` classes without
    replacement and a random order of each class's samples, in the order and with the generator
    (``numpy.random.default_rng(seed)``) of :func:`fewshot_error`, so on the same features both functions
    see the same episodes; the first ``shots`` samples average to the class centre
    :math:`\hat\mu_c`, the next ``queries`` go to :math:`\arg\min_c\|f(x)-\hat\mu_c\|^2`. Centres,
    distances and errors stay on the device; one host copy of the per-episode errors at the end."""
    host = labels.cpu().numpy()
    members = [np.flatnonzero(host == c) for c in np.unique(host)]
    if ways < 2 or shots < 1 or queries < 1 or episodes < 1 or ways > len(members):
        raise ValueError(f"need 2 <= ways <= {len(members)} and positive shots, queries, episodes")
    if min(len(m) for m in members) < shots + queries:
        raise ValueError(f"every class needs shots + queries = {shots + queries} samples")
    rng = np.random.default_rng(seed)
    device = features.device
    truth = torch.arange(ways, device=device).repeat_interleave(queries)
    errors = torch.empty(episodes, dtype=torch.float64, device=device)
    for e in range(episodes):
        chosen = rng.choice(len(members), size=ways, replace=False)
        rows = np.stack([members[c][rng.permutation(len(members[c]))[: shots + queries]] for c in chosen])
        picked = features[torch.as_tensor(rows, device=device)]  # (ways, shots + queries, dim)
        centres = picked[:, :shots].mean(dim=1)
        query = picked[:, shots:].reshape(ways * queries, -1)
        distances = ((query[:, None, :] - centres[None, :, :]) ** 2).sum(dim=2)
        errors[e] = (distances.argmin(dim=1) != truth).double().mean()
    values = errors.cpu().numpy()
    se = float(values.std(ddof=1) / math.sqrt(episodes)) if episodes > 1 else 0.0
    return float(values.mean()), se


def _classes_with(features: np.ndarray, labels: np.ndarray, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the classes that have at least ``minimum`` samples (small stand-in data sets)."""
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, classes[counts >= minimum])
    return features[keep], labels[keep]


def cifar_transfer(data, *, epochs: int, width: int = 64, split: str = "cifar-fs", n_target: int = 20,
                   shots=(1, 5, 50, 100, 500),
                   ways: int = 5, queries: int = 100, episodes: int = 1000, batch: int = 128, lr: float = 0.1,
                   wd: float = 5e-4, momentum: float = 0.9, augment: bool = True, autocast=None,
                   seed: int = 0) -> dict:
    r"""The transfer experiment on a labelled image set ``data`` (a :class:`~theorylab.data.Split`, e.g.
    CIFAR-100), on the data's device.

    1. :func:`class_split` of kind ``split`` holds out the target classes (CIFAR-FS's 20 test classes, or
       ``n_target`` random ones); :func:`split_by_classes` gives the rest as the source task.
    2. A CIFAR ResNet-18 (:func:`theorylab.models.resnet18`, ``width``) trains on the source classes with
       :func:`theorylab.training.train_epochs`: SGD with momentum, rate ``lr`` divided by 10 at 50% and
       75% of ``epochs``, weight decay ``wd``, random crops and flips when ``augment``.
    3. :func:`embed` maps every target image (training and test sets pooled) to its penultimate features;
       one float64 host copy of them gives the class moments (:func:`class_moments`), the CDNV (GGH;
       ``V`` = twice it, the directional paper's convention) and the directional CDNV
       (:func:`directional_cdnv_matrix`), and the many-shot limits of T1 and T2 and the plain CDNV bound for
       ``ways``-way tasks. The same for the source classes' training and test images (``train CDNV``,
       ``test CDNV``).
    4. For each shot count :math:`m` (capped by :func:`usable_shots`): the ``ways``-way NCC error over
       ``episodes`` episodes (:func:`fewshot_error_device`), T1 (:func:`ncc_bound`) and, for
       :math:`m\ge10`, T2 (:func:`directional_bound_paper`), both averaged over random ``ways``-class tasks.
       Any disjoint support and query sets of a class are independent samples of it, so the episodes
       estimate the true :math:`m`-shot error; the bounds take their moments from all the samples of each
       target class (the same samples: with 600 images per class and up to 500 shots, none are left to
       hold out).

    Classes with fewer than two samples (only in small stand-in sets) are left out."""
    from . import models, training

    device = data.y_train.device
    n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    source, target = class_split(n_classes, n_target, seed=seed, kind=split)
    source_split, target_x, target_y = split_by_classes(data, source, target)
    torch.manual_seed(seed)
    model = models.resnet18(len(source), in_channels=data.x_train.shape[1], width=width).to(device)
    run = training.train_epochs(model, source_split, batch=batch, lr=lr, wd=wd, epochs=epochs,
                                milestones=sorted({e for e in (epochs // 2, 3 * epochs // 4) if e > 0}),
                                gamma=0.1, momentum=momentum,
                                augment=augment, seed=seed, autocast=autocast)
    out = {"source classes": len(source), "target classes": len(target), "epochs": epochs, "width": width,
           "train seconds": run.seconds, "parameters": models.parameter_count(model),
           "source accuracy": training.batched_accuracy(model, source_split.x_test, source_split.y_test)}
    for key, x, y in (("train CDNV", source_split.x_train, source_split.y_train),
                      ("test CDNV", source_split.x_test, source_split.y_test)):
        f, labels = _classes_with(embed(model, x).double().cpu().numpy(), y.cpu().numpy())
        out[key] = cdnv(f, labels) if np.unique(labels).size >= 2 else math.nan
    features = embed(model, target_x).double()
    host, labels = _classes_with(features.cpu().numpy(), target_y.cpu().numpy())
    keep = torch.as_tensor(np.isin(target_y.cpu().numpy(), np.unique(labels)), device=device)
    features, target_y = features[keep], target_y[keep]
    moments = class_moments(host, labels)
    ways = min(ways, len(moments.classes))
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    used, q = usable_shots(shots, smallest, queries)
    ggh = cdnv(host, labels)
    out |= {"ways": ways, "queries": q, "smallest class": smallest, "CDNV": ggh, "V": 2 * ggh,
            "directional": float(off_diagonal(directional_cdnv_matrix(moments)).mean()),
            "T1 limit": ncc_limit_bound(moments, ways), "T2 limit": directional_limit(moments, ways),
            "CDNV bound": plain_cdnv_bound(moments, ways), "rows": []}
    for m, m_used in zip(shots, used, strict=True):
        error, se = fewshot_error_device(features, target_y, ways, m_used, q, episodes, seed=seed + m)
        out["rows"].append({"m": m, "m used": m_used, "error": error, "se": se,
                            "T1": ncc_bound(moments, m_used, ways), "T1 trivial pairs": ncc_trivial_pairs(moments, m_used),
                            "T2": directional_bound_paper(moments, m_used, ways) if m_used >= 10 else math.nan})
    return out


def fewshot_table(result: dict) -> str:
    """:func:`cifar_transfer` in the directional-CDNV paper's table format, one row per shot count: the shots
    asked for and used, the measured NCC error and its standard error, T1, T2 (``nan`` below 10 shots),
    the target CDNV (GGH), :math:`V` and the directional CDNV; a last row ``inf`` with the many-shot limits
    of T1 and T2 and the plain CDNV bound in the T1 column's place (marked ``cdnv``). Measured numbers
    are marked with :func:`theorylab.runtime.measured`."""
    from .runtime import measured

    head = (f"{'m':>5s} {'used':>5s} {'error':>8s} {'se':>7s} {'T1':>8s} {'T2':>8s} {'CDNV':>7s} {'V':>7s} "
            f"{'Vtilde':>8s}")
    constants = (f" {measured(result['CDNV'], '.3f'):>7s} {measured(result['V'], '.3f'):>7s}"
                 f" {measured(result['directional'], '.4f'):>8s}")
    lines = [head]
    for r in result["rows"]:
        lines.append(f"{r['m']:>5d} {r['m used']:>5d} {measured(r['error'], '.3f'):>8s} {measured(r['se'], '.3f'):>7s} "
                     f"{measured(r['T1'], '.3f'):>8s} {measured(r['T2'], '.3f'):>8s}" + constants)
    lines.append(f"{'inf':>5s} {'':>5s} {'':>8s} {'':>7s} {measured(result['T1 limit'], '.3f'):>8s} "
                 f"{measured(result['T2 limit'], '.3f'):>8s}" + constants)
    lines.append(f"{'':>5s} plain CDNV bound (many shots) {measured(result['CDNV bound'], '.2f')}")
    return "\n".join(lines)


def gaussian_study(s_par: float, s_perp: float, shots: list[int], *, episodes: int, dim: int = 64,
                   half_distance: float = 1.5, samples: int = 50_000, seed: int = 0) -> dict:
    r"""Two classes :math:`N(\mp1.5e_1,\mathrm{diag}(\sigma_\parallel^2,\sigma_\perp^2,\dots))` in ``dim``
    dimensions. Moments from ``samples`` draws per class; per shot count :math:`m`: the Monte Carlo NCC error
    (:func:`fewshot_error`, 2-way, 100 queries per class), the semi-analytic error
    (:func:`gaussian_ncc_error`), their distance ``z`` in combined standard errors, T1 and T2
    (:math:`m\ge10`). Also the exact many-shot error
    :math:`\Phi(-\frac{1.5}{\sigma_\parallel})`, T1's and T2's many-shot limits, the CDNV (GGH) and V."""
    rng = np.random.default_rng(seed)
    scale = np.full(dim, s_perp)
    scale[0] = s_par
    centre = half_distance * np.eye(dim)[0]
    classes = [rng.normal(size=(samples, dim)) * scale + sign * centre for sign in (-1, 1)]
    features, labels = np.concatenate(classes), np.repeat([0, 1], samples)
    moments = class_moments(features, labels)
    rows = []
    for m in shots:
        error, se = fewshot_error(classes, 2, m, 100, episodes, seed=seed + m)
        exact, exact_se = gaussian_ncc_error(-centre, centre, scale, m, seed=seed + 7 * m)
        rows.append({"m": m, "error": error, "se": se, "semi-analytic": exact, "semi-analytic se": exact_se,
                     "z": abs(error - exact) / math.hypot(se, exact_se),
                     "T1": ncc_bound(moments, m), "T2": directional_bound_paper(moments, m) if m >= 10 else math.nan})
    return {"rows": rows, "cdnv": cdnv(features, labels), "V": cdnv(features, labels, "directional"),
            "directional": float(off_diagonal(directional_cdnv_matrix(moments)).mean()),
            "exact": gaussian_ncc_error(-centre, centre, scale)[0],
            "T1 limit": ncc_limit_bound(moments), "T2 limit": directional_limit(moments)}


def random_embedding_gaps(class_counts: list[int], taus=(1.0, 0.5), n: int = 1024, dim: int = 64,
                          seed: int = 0, device: torch.device | str = "cpu") -> dict:
    r"""T4 on class-independent embeddings: ``n`` Gaussian vectors and a second view with noise 0.3, labels
    :math:`k \bmod C`; for each :math:`(\tau, C)` the measured gap (losses on ``device``; the draws are made
    on the CPU, so they do not depend on it), the equal-similarity gap (:func:`equal_similarity_gap`) and
    T4's bound (:func:`dcl_nscl_gap_bound`)."""
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, dim, generator=generator)
    z2 = (z1 + 0.3 * torch.randn(n, dim, generator=generator)).to(device)
    z1 = z1.to(device)
    out = {}
    for tau in taus:
        for C in class_counts:
            labels = torch.arange(n) % C
            gap = float(dcl_loss(z1, z2, tau) - nscl_loss(z1, z2, labels.to(device), tau))
            out[tau, C] = (gap, equal_similarity_gap(labels), dcl_nscl_gap_bound(labels, tau))
    return out


def kernel_study(dimensions: list[int], points: int, *, seed: int = 0) -> dict:
    r"""Kernel NC1 (:func:`kernel_nc1`) of the two-layer NNGP and NTK, erf and ReLU, on
    :func:`theorylab.data.gaussian_two_class` with ``points`` points in each dimension :math:`d_0`."""
    from .data import gaussian_two_class

    out = {}
    for d0 in dimensions:
        x, y = gaussian_two_class(points // 2, d0, seed=seed + d0)
        for activation in ("erf", "relu"):
            out[activation, "NNGP", d0] = kernel_nc1(nngp_kernel(x, activation), y)
            out[activation, "NTK", d0] = kernel_nc1(ntk_kernel(x, activation), y)
    return out


# ----------------------------------------------------------------------------------------------
# Tables and figures of the chapter

TRANSFER_COLUMNS = {"train CDNV": ".3f", "test CDNV": ".3f", "target CDNV": ".3f", "directional": ".3f",
                    "NC1 trace": ".3f", "accuracy": ".3f", "T1": ".3f", "CDNV bound": ".2f"}


def transfer_table(rows: dict, columns: dict[str, str] = TRANSFER_COLUMNS, width: int = 11) -> str:
    """One line per entry of ``rows`` (name -> :func:`transfer_row` dict), measured numbers marked with
    :func:`theorylab.runtime.measured`; a missing entry prints ``nan``."""
    from .runtime import measured

    lines = [f"{'source classes':>14s} " + " ".join(f"{k:>{width}s}" for k in columns)]
    for name, row in rows.items():
        cells = [(measured(row[k], spec) if k in row else "nan").rjust(width) for k, spec in columns.items()]
        lines.append(f"{name!s:>14s} " + " ".join(cells))
    return "\n".join(lines)


def gaussian_line(s_par: float, s_perp: float, study: dict, every: int = 2, start: int = 2) -> str:
    """A summary line of :func:`gaussian_study`: the exact many-shot error (exact, unmarked), the two
    limits and error, T1, T2 at every ``every``-th shot count from ``start`` (measured, marked)."""
    cells = " ".join(f"m={r['m']}: err ≈{r['error']:.3f} T1 ≈{r['T1']:.3f} T2 ≈{r['T2']:.2f}"
                     for r in study["rows"][start::every])
    return (f"sigma_par {s_par}, sigma_perp {s_perp}: exact many-shot error {study['exact']:.3f}; "
            f"limits T1 ≈{study['T1 limit']:.3f}, T2 ≈{study['T2 limit']:.3f}; {cells}")


def directional_table(studies: dict, paper: dict | None = None, shots=(50, 100, 500)) -> str:
    """The directional-CDNV paper's table format: V, directional CDNV, T2 at ``shots`` and at infinity, and
    the error, for ``paper`` (quoted numbers; no row if None) and for each :func:`gaussian_study` (measured, marked; the
    error at the first shot count and the exact many-shot error)."""
    from .runtime import measured

    head = f"{'':>24s} {'V':>6s} {'Vtilde':>7s}" + "".join(f" {f'T2 m={m}':>9s}" for m in shots)
    lines = [head + f" {'T2 inf':>7s} {f'err m={shots[0]}':>10s} {'err inf':>7s}"]
    if paper is not None:
        lines.append(f"{'paper, MAE mini-ImageNet':>24s} {paper['V']:6.2f} {paper['directional']:7.3f}"
                     + "".join(f" {paper['T2'][m]:9.2f}" for m in shots)
                     + f" {paper['T2 limit']:7.2f} {paper['error']:>10s} {'':>7s}")
    for (s_par, s_perp), g in studies.items():
        t2 = {r["m"]: r["T2"] for r in g["rows"]}
        error = {r["m"]: r["error"] for r in g["rows"]}[shots[0]]
        lines.append(f"{f'Gaussian {s_par}, {s_perp}':>24s} {measured(g['V'], '.2f'):>6s} "
                     f"{measured(g['directional'], '.3f'):>7s}"
                     + "".join(f" {measured(t2[m], '.2f'):>9s}" for m in shots)
                     + f" {measured(g['T2 limit'], '.2f'):>7s} {measured(error, '.3f'):>10s} {g['exact']:7.3f}")
    return "\n".join(lines)


def calibration_summary(baseline: dict, ells=(5, 20, 100), dims=(8, 32, 128)) -> dict[str, float]:
    r"""Numbers the chapter quotes from its calibration runs (``baseline["metrics"][leaf]["runs"]``, one value
    per run, in the same run order for every leaf): ``cal_runs``; the largest test/train source CDNV ratio
    (``cal_test_train_max``); the smallest accuracy margin of an encoder over the raw inputs in one run
    (``acc_margin_min``); in how many runs target NC1 is lowest at the middle number of source classes
    (``nc1_low_at_20``); the range of the two-layer network's NC1 at initialisation over the NNGP's,
    :math:`\text{init}\cdot\text{over\_nngp}/\text{nc1}` (``init_over_nngp_min``/``_max``); and the largest
    trained/initial NC1 (``trained_over_init_max``)."""
    metrics = baseline["metrics"]
    runs = lambda leaf: np.asarray(metrics[leaf]["runs"], dtype=float)
    result = lambda ell, key: runs(f"transfer.results.{ell}.{key}")
    layer = lambda key, d0: runs(f"trained_two_layer.{key}.{d0}")
    raw = runs("transfer.raw.accuracy")
    nc1 = [result(ell, "NC1 trace") for ell in ells]
    init_over_nngp = np.concatenate([layer("init", d) * layer("over_nngp", d) / layer("nc1", d) for d in dims])
    return {
        "cal_runs": float(raw.size),
        "cal_test_train_max": float(max(runs(f"transfer.test_over_train[{k}]").max() for k in range(len(ells)))),
        "acc_margin_min": float(min((result(ell, "accuracy") - raw).min() for ell in ells)),
        "nc1_low_at_20": float(np.sum((nc1[1] < nc1[0]) & (nc1[1] < nc1[2]))),
        "init_over_nngp_min": float(init_over_nngp.min()),
        "init_over_nngp_max": float(init_over_nngp.max()),
        "trained_over_init_max": float(max((layer("nc1", d) / layer("init", d)).max() for d in dims)),
    }


def plot_bounds_against_shots(ax, study: dict, palette) -> None:
    """Draw one :func:`gaussian_study` on ``ax``: Monte Carlo error (3 SE bars), semi-analytic error, T1, T2,
    the two many-shot limits (dotted) and the exact many-shot error (dash-dotted), log-log."""
    shots = [r["m"] for r in study["rows"]]
    column = lambda name: [r[name] for r in study["rows"]]
    ax.errorbar(shots, column("error"), yerr=[3 * s for s in column("se")], fmt="o", color=palette[0],
                label="NCC error (MC)")
    ax.plot(shots, column("semi-analytic"), "-", color="0.5", label="NCC error (semi-analytic)")
    ax.plot(shots, column("T1"), "s-", color=palette[1], label="T1 (ours)")
    ax.plot(shots, column("T2"), "^-", color=palette[2], label="T2 (paper)")
    ax.axhline(study["T1 limit"], color=palette[1], linestyle=":", label="T1 limit")
    ax.axhline(study["T2 limit"], color=palette[2], linestyle=":", label="T2 limit")
    ax.axhline(study["exact"], color="k", linestyle="-.", label="exact many-shot error")
    ax.set(xscale="log", yscale="log", xlabel="shots m")
