r"""Ranks of weight matrices and the low-rank certificate of SGD with weight decay.

Chapter: ``chapters/rank-minimization`` (Galanti, Siegel, Gupte and Poggio, arXiv:2206.05794).
Convention: PyTorch's ``SGD(weight_decay=wd)`` step is :math:`W \leftarrow (1-\mu\,\mathrm{wd})W - \mu G`,
so the paper's :math:`\lambda\|W\|_F^2` penalty is :math:`\mathrm{wd} = 2\lambda`. Singular values are
computed in float64 and sorted :math:`\sigma_1 \ge \sigma_2 \ge \dots`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def conv_kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    r"""A convolution kernel :math:`C_{out}\times C_{in}\times k\times k` reshaped to
    :math:`C_{out}\times C_{in}k^2` (the rank used for convolutions in the chapter)."""
    if weight.ndim != 4:
        raise ValueError(f"weight: expected a 4-d convolution kernel, got shape {tuple(weight.shape)}")
    return weight.reshape(weight.shape[0], -1)


def as_matrix(weight: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A float64 matrix: 2-d weights as they are, convolution kernels reshaped."""
    tensor = torch.as_tensor(weight).detach().to(torch.float64).cpu()
    if tensor.ndim == 4:
        return conv_kernel_matrix(tensor)
    if tensor.ndim != 2:
        raise ValueError(f"weight: expected a matrix or a 4-d kernel, got shape {tuple(tensor.shape)}")
    return tensor


def singular_values(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    r""":math:`\sigma_1 \ge \sigma_2 \ge \dots` of ``weight`` (float64; kernels reshaped)."""
    return torch.linalg.svdvals(as_matrix(weight)).numpy()


def _check_eps(eps: float) -> float:
    if not 0 < eps < 1:
        raise ValueError(f"eps: got {eps!r}, expected a number in (0, 1)")
    return eps


def count_rank(weight, eps: float) -> int:
    r"""Count rank :math:`\#\{i : \sigma_i/\|W\|_F > \varepsilon\}` (the paper's code, D1)."""
    s = singular_values(weight)
    return int(np.count_nonzero(s > _check_eps(eps) * np.sqrt(np.sum(s ** 2))))


def tail_rank(weight, eps: float) -> int:
    r"""Tail rank :math:`\min\{r : \sum_{i>r}\sigma_i^2 \le \varepsilon^2\|W\|_F^2\}`: by Eckart–Young the
    smallest rank within relative Frobenius distance :math:`\varepsilon` of :math:`W` (D1)."""
    s2 = singular_values(weight) ** 2
    tails = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tails[r] = sum_{i > r} sigma_i^2
    return int(np.argmax(tails <= _check_eps(eps) ** 2 * s2.sum()))


def stable_rank(weight) -> float:
    r"""Stable rank :math:`\|W\|_F^2 / \sigma_1^2`."""
    s = singular_values(weight)
    return float(np.sum(s ** 2) / s[0] ** 2)


def numerical_rank(weight, rtol: float) -> int:
    r""":math:`\#\{i : \sigma_i > \text{rtol}\cdot\sigma_1\}`, the rank of a matrix known to rounding ``rtol``."""
    s = singular_values(weight)
    return int(np.count_nonzero(s > rtol * s[0])) if s[0] > 0 else 0


def decay_factor(lrs: Sequence[float], wd: float) -> float:
    r""":math:`c_n = \prod_t (1 - \mu_t\,\mathrm{wd})` over the learning rates of the last :math:`n` steps (L3)."""
    return float(np.prod([1.0 - lr * wd for lr in lrs]))


def steps_for_rank(eps: float, kappa: float, lr: float, wd: float) -> int:
    r"""The window of C1: :math:`n = \lceil \log(\kappa/\varepsilon) / (-\log(1-\mu\,\mathrm{wd}))\rceil`, the least
    :math:`n` with :math:`(1-\mu\,\mathrm{wd})^n\kappa \le \varepsilon`."""
    if not 0 < lr * wd < 1:
        raise ValueError(f"lr * wd: got {lr * wd!r}, expected a number in (0, 1) (without weight decay no bound holds)")
    if kappa < eps:
        return 0
    return math.ceil(math.log(kappa / _check_eps(eps)) / -math.log1p(-lr * wd))


def rank_bound(batch: int, uses: int, lr: float, wd: float, eps: float, kappa: float) -> int:
    r"""C1: :math:`\mathrm{rank}^{\rm tail}_\varepsilon(W_T/\|W_T\|_F) \le BR\,n` with :math:`n` from
    :func:`steps_for_rank`, given the norm ratio :math:`\|W_{T-n}\|_F \le \kappa\|W_T\|_F`."""
    if batch < 1 or uses < 1:
        raise ValueError(f"batch and uses must be positive integers, got {batch} and {uses}")
    return batch * uses * steps_for_rank(eps, kappa, lr, wd)


@dataclass(frozen=True)
class Certificate:
    """T1 on a real run: the unrolling residual, the certified distance and the measured rank."""

    window: int
    rank_budget: int
    epsilon: float
    tail_rank: int
    sum_rank: int
    unrolling_residual: float

    @property
    def holds(self) -> bool:
        return self.tail_rank <= self.rank_budget and self.sum_rank <= self.rank_budget


def certificate(w_start, w_end, update_sum, decay: float, window: int, rank_per_step: int,
                rtol: float = 1e-5) -> Certificate:
    r"""T1: with :math:`W_T = c_n W_{T-n} + S_T` (L3), :math:`S_T` a sum of :math:`n` updates of rank
    :math:`\le BR` each, :math:`\mathrm{rank}^{\rm tail}_{\varepsilon_n}(W_T) \le nBR` for
    :math:`\varepsilon_n = c_n\|W_{T-n}\|_F/\|W_T\|_F`.

    Returns :math:`\varepsilon_n`, the budget :math:`nBR`, the measured tail rank of :math:`W_T` at
    :math:`\varepsilon_n`, the numerical rank of :math:`S_T` at relative tolerance ``rtol`` (float32
    gradients carry rounding near 1e-7), and the relative residual
    :math:`\|W_T - c_nW_{T-n} - S_T\|_F/\|W_T\|_F` of the identity L3.
    """
    start, end, total = as_matrix(w_start), as_matrix(w_end), as_matrix(update_sum)
    end_norm = float(torch.linalg.matrix_norm(end))
    epsilon = decay * float(torch.linalg.matrix_norm(start)) / end_norm
    residual = float(torch.linalg.matrix_norm(end - decay * start - total)) / end_norm
    budget = window * rank_per_step
    measured = tail_rank(end, epsilon) if 0 < epsilon < 1 else min(end.shape)
    return Certificate(window=window, rank_budget=budget, epsilon=epsilon, tail_rank=measured,
                       sum_rank=numerical_rank(total, rtol), unrolling_residual=residual)


def near_convergence_distance(weight, batch_gradient, wd: float) -> float:
    r"""L4: :math:`\|W + \nabla L_{\rm batch}/\mathrm{wd}\|_F / \|W\|_F
    = \|\nabla(L_{\rm batch} + \tfrac{\mathrm{wd}}2\|W\|_F^2)\|_F / (\mathrm{wd}\,\|W\|_F)`.

    :math:`-\nabla L_{\rm batch}/\mathrm{wd}` has rank at most :math:`BR`, so a small value certifies that
    :math:`W` is that close to a matrix of rank :math:`BR`; it is small only near a stationary point of the
    regularised batch loss.
    """
    if not wd > 0:
        raise ValueError(f"wd: got {wd!r}, expected a positive weight decay")
    w, g = as_matrix(weight), as_matrix(batch_gradient)
    return float(torch.linalg.matrix_norm(w + g / wd) / torch.linalg.matrix_norm(w))


def spectrum_measures(weight, eps: Sequence[float] = (1e-3, 1e-2), tail_eps: Sequence[float] = (1e-3, 0.1)) -> dict:
    r"""Every rank measure of the chapter from one SVD: ``count rank EPS`` (:math:`\mathrm{rank}^{\#}_\varepsilon`),
    ``tail rank EPS`` (:math:`\mathrm{rank}^{\rm tail}_\varepsilon`) and ``stable rank`` (:math:`\|W\|_F^2/\sigma_1^2`)."""
    s = singular_values(weight)
    s2 = s ** 2
    total = s2.sum()
    tails = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
    out = {f"count rank {e:g}": float(np.count_nonzero(s > _check_eps(e) * np.sqrt(total))) for e in eps}
    out |= {f"tail rank {e:g}": float(np.argmax(tails <= _check_eps(e) ** 2 * total)) for e in tail_eps}
    out["stable rank"] = float(total / s2[0])
    return out


@dataclass
class StackedRuns:
    """:func:`train_stacked_mlps`' result: per run (one slice of the stack) its configuration, the
    measures recorded at each requested step, and the final test accuracy."""

    configs: list[dict]
    records: dict[int, list[dict]]  # step -> one dict of measures per run
    weights: list[torch.Tensor]  # the final stacked weights, (runs, out, in) per layer


def _stacked_forward(weights, biases, x):
    h = x
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
        if k < len(weights) - 1:
            h = torch.relu(h)
    return h


def train_stacked_mlps(widths: Sequence[int], split, configs: Sequence[dict], *, batch: int, steps: int,
                       measure_at: Sequence[int] = (), measure=None) -> StackedRuns:
    r"""Train one ReLU MLP per entry of ``configs`` (dicts with ``seed``, ``lr``, ``wd``) at once, stacked
    along a leading dimension (batched matrix products), each exactly as :func:`theorylab.training.train_sgd`
    trains it alone: initialisation ``torch.manual_seed(seed); training.mlp(widths)``, a generator seeded
    with ``seed`` drawing ``batch`` indices with replacement per step, and plain SGD with weight decay on
    every weight and bias, :math:`W \leftarrow W - \mu(G + \mathrm{wd}\,W) = (1-\mu\,\mathrm{wd})W - \mu G`.

    At every step in ``measure_at`` (0 = initialisation; ``steps`` is always added) ``measure(weights, run)``
    is recorded per run with the test accuracy (``weights`` are that run's matrices)."""
    from theorylab import training  # local import: training does not depend on rank

    if not configs:
        raise ValueError("configs: expected at least one run")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1 or steps < 1:
        raise ValueError(f"batch and steps must be positive integers, got batch={batch!r}, steps={steps!r}")
    for c in configs:
        if set(c) < {"seed", "lr", "wd"} or c["lr"] <= 0 or c["wd"] < 0:
            raise ValueError(f"config {c!r}: expected keys seed, lr > 0, wd >= 0")
    if any(not 0 <= s <= steps for s in measure_at):
        raise ValueError(f"measure_at: got {list(measure_at)}, expected steps in 0..{steps}")
    layers = []
    for c in configs:
        torch.manual_seed(c["seed"])
        layers.append([m for m in training.mlp(widths) if isinstance(m, torch.nn.Linear)])
    weights = [torch.stack([run[k].weight.detach() for run in layers]).requires_grad_() for k in range(len(widths) - 1)]
    biases = [torch.stack([run[k].bias.detach() for run in layers]).requires_grad_() for k in range(len(widths) - 1)]
    lr = torch.tensor([float(c["lr"]) for c in configs])
    wd = torch.tensor([float(c["wd"]) for c in configs])
    n = len(split.y_train)
    index = torch.stack([torch.stack([torch.randint(0, n, (batch,), generator=g) for _ in range(steps)])
                         for g in (torch.Generator().manual_seed(int(c["seed"])) for c in configs)])  # (runs, steps, B)
    measure = measure or (lambda ws, run: {})
    records: dict[int, list[dict]] = {}
    wanted = {*measure_at, steps}

    def record(step):
        with torch.no_grad():
            logits = _stacked_forward(weights, biases, split.x_test.expand(len(configs), *split.x_test.shape))
            acc = (logits.argmax(-1) == split.y_test).float().mean(1)
        records[step] = [{**measure([w[r].detach() for w in weights], r), "test accuracy": float(acc[r])}
                         for r in range(len(configs))]

    for step in range(steps):
        if step in wanted:
            record(step)
        rows = index[:, step]
        logits = _stacked_forward(weights, biases, split.x_train[rows])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), split.y_train[rows].reshape(-1),
                                                 reduction="sum") / batch  # sum over runs of each run's mean
        grads = torch.autograd.grad(loss, [*weights, *biases])
        with torch.no_grad():
            for p, g in zip([*weights, *biases], grads, strict=True):
                shape = (-1,) + (1,) * (p.ndim - 1)
                p.sub_(lr.view(shape) * (g + wd.view(shape) * p))
    record(steps)
    return StackedRuns(configs=[dict(c) for c in configs], records=records, weights=[w.detach() for w in weights])


def hidden_measures(weights: Sequence[torch.Tensor], run: int = 0) -> dict:
    r"""The mean of :func:`spectrum_measures` over the hidden matrices ``weights[1:-1]`` (the first and
    last layers are capped by their shapes), and ``count <= tail`` (1.0 if the lemma
    :math:`\mathrm{rank}^{\#}_\varepsilon\le\mathrm{rank}^{\rm tail}_\varepsilon` holds for each of them at 1e-3)."""
    each = [spectrum_measures(w) for w in weights[1:-1]]
    out = {key: float(np.mean([m[key] for m in each])) for key in each[0]}
    out["count <= tail"] = float(all(m["count rank 0.001"] <= m["tail rank 0.001"] for m in each))
    return out


def stacked_sweep(widths: Sequence[int], split, settings: Sequence[dict], seeds: Sequence[int], *, batch: int,
                  steps: int, measure_at: Sequence[int] = ()) -> list[dict]:
    r"""Every setting (``lr``, ``wd``) for every seed, trained together by :func:`train_stacked_mlps`; one
    row per run and measured step with the setting, ``seed``, ``batch``, ``step``, the number of decay
    times :math:`\mu\,\mathrm{wd}\,t`, the test accuracy and :func:`hidden_measures`."""
    configs = [dict(s, seed=int(k)) for s in settings for k in seeds]
    result = train_stacked_mlps(widths, split, configs, batch=batch, steps=steps, measure_at=measure_at,
                                measure=hidden_measures)
    return [{**c, "batch": batch, "step": step, "decay times": c["lr"] * c["wd"] * step, **m}
            for step, measures in sorted(result.records.items()) for c, m in zip(result.configs, measures, strict=True)]


def select(rows: Sequence[dict], **where) -> list[dict]:
    """The rows whose fields equal ``where`` (floats compared with ``math.isclose``)."""
    found = [r for r in rows if all(math.isclose(r[k], v, rel_tol=1e-9, abs_tol=1e-12) for k, v in where.items())]
    if not found:
        raise KeyError(f"no row with {where}")
    return found


def seed_stats(rows: Sequence[dict], key: str) -> tuple[float, float, float, float]:
    r"""Mean, sample standard deviation (0 for one row), smallest and largest of ``key`` over ``rows``."""
    values = np.array([r[key] for r in rows], dtype=float)
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), sd, float(values.min()), float(values.max())


def spread_text(rows: Sequence[dict], key: str, spec: str = ".1f") -> str:
    """``≈mean ± ≈sd`` of ``key`` over ``rows`` (the seeds of one setting): both are measured, so both carry
    the ``≈`` that the regression test's sanitizer masks."""
    mean, sd, _, _ = seed_stats(rows, key)
    return f"≈{mean:{spec}} ± ≈{sd:{spec}}"


def certificate_curve(end, norms: Sequence[float], lr: float, wd: float, batch: int) -> dict[str, np.ndarray]:
    r"""T1 for every window :math:`n = 1..N` of one constant-rate run, from the final matrix :math:`W_T`
    and the norms ``norms[n] =`` :math:`\|W_{T-n}\|_F` (``norms[0]`` is :math:`\|W_T\|_F`).

    Returns ``n``, the budget :math:`nB`, the certified distance
    :math:`\varepsilon_n=(1-\mu\,\mathrm{wd})^n\|W_{T-n}\|_F/\|W_T\|_F`, the tail rank of :math:`W_T` at
    :math:`\varepsilon_n` (the least rank within the certified distance) and the Eckart–Young distance
    :math:`\sqrt{\sum_{i>nB}\sigma_i^2}/\|W_T\|_F` from :math:`W_T` to rank :math:`nB` (what the
    certificate bounds by :math:`\varepsilon_n`)."""
    norms = np.asarray(norms, dtype=float)
    if len(norms) < 2 or batch < 1 or not 0 < lr * wd < 1:
        raise ValueError(f"need norms for n >= 1, batch >= 1 and 0 < lr*wd < 1; got {len(norms)}, {batch}, {lr * wd}")
    s2 = singular_values(end) ** 2
    tails = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tails[r] = sum_{i > r} sigma_i^2
    n = np.arange(1, len(norms))
    budget = n * batch
    epsilon = (1 - lr * wd) ** n * norms[1:] / norms[0]
    tail = np.array([int(np.argmax(tails <= e ** 2 * s2.sum())) for e in epsilon])
    distance = np.sqrt(tails[np.minimum(budget, len(s2))] / s2.sum())
    return {"n": n, "budget": budget, "epsilon": epsilon, "tail rank": tail, "distance": distance}


@dataclass
class CertificateRun:
    """:func:`certificate_experiment`'s result."""

    found: Certificate
    gradient_ranks: list[int]
    spectra: dict[str, np.ndarray]
    accuracy: float
    l4_distances: np.ndarray
    curve: dict[str, np.ndarray]


def certificate_experiment(split, *, widths: Sequence[int], batch: int, lr: float, wd: float, steps: int, window: int,
                           scan: int, seed: int, check_gradients: int = 10, l4_examples: int = 50) -> CertificateRun:
    r"""Train ``training.mlp(widths)`` with plain SGD and check T1 on its second weight matrix.

    Over the last ``window`` steps the running sum :math:`S_t` of L3 is accumulated in float64 and
    :func:`certificate` compares :math:`W_T` with :math:`c_nW_{T-n}+S_T`; the batch gradient's
    numerical rank (rtol 1e-5) is taken at ``check_gradients`` steps; :func:`certificate_curve` gives T1
    for every window up to ``scan`` from the recorded norms :math:`\|W_t\|_F`; L4's
    :func:`near_convergence_distance` is taken on ``l4_examples`` single training examples."""
    from theorylab import training

    if not 1 <= window <= scan <= steps:
        raise ValueError(f"expected 1 <= window <= scan <= steps, got {window}, {scan}, {steps}")
    torch.manual_seed(seed)
    model = training.mlp(widths)
    middle = training.weight_matrices(model)[1]
    result = training.train_sgd(model, split, batch=batch, lr=lr, wd=wd, steps=steps, seed=seed, unroll=(middle, window),
                                check_gradients=check_gradients, record_every=1,
                                record=lambda m: {"norm": float(middle.detach().norm())})
    tracker = result.unrolled
    found = certificate(tracker.start, middle, tracker.total, decay_factor(tracker.lrs, wd), window, rank_per_step=batch)
    norms = [result.history[steps - n]["norm"] for n in range(scan + 1)]
    distances = []
    for index in torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(seed))[:l4_examples]:
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(split.x_train[index:index + 1]), split.y_train[index:index + 1]).backward()
        distances.append(near_convergence_distance(middle, middle.grad, wd))
    return CertificateRun(found=found, gradient_ranks=[numerical_rank(g, 1e-5) for g in tracker.gradients_checked],
                          spectra={"W_T": singular_values(middle), "S_T": singular_values(tracker.total)},
                          accuracy=training.accuracy(model, split.x_test, split.y_test), l4_distances=np.array(distances),
                          curve=certificate_curve(middle, norms, lr, wd, batch))


def cnn_runs(split, weight_decays: Sequence[float], seeds: Sequence[int], *, steps: int, record_every: int,
             batch: int = 16, lr: float = 0.1, channels: int = 32) -> list[dict]:
    r"""``training.small_cnn(channels)`` trained with plain SGD for every weight decay and seed; one row per
    run and recorded step with the count rank at 1e-3 of the second convolution's kernel reshaped to
    :math:`C_{\rm out}\times C_{\rm in}k^2` and the test accuracy."""
    from theorylab import training

    rows = []
    for wd in weight_decays:
        for s in seeds:
            torch.manual_seed(s)
            model = training.small_cnn(channels)
            kernel = training.weight_matrices(model)[1]
            result = training.train_sgd(model, split, batch=batch, lr=lr, wd=wd, steps=steps, seed=s,
                                        record_every=record_every,
                                        record=lambda m, k=kernel: {"rank": count_rank(k, 1e-3),
                                                                    "accuracy": training.accuracy(m, split.x_test, split.y_test)})
            rows += [{"wd": wd, "seed": s, **h} for h in result.history]
    return rows


def matched_accuracy_rank(rows: Sequence[dict], seed: int, target_accuracy: float) -> dict:
    """The control for under-training: in the run without weight decay of ``seed``, the first recorded step
    whose test accuracy reaches ``target_accuracy`` (the last step if none does), with its rank."""
    history = sorted(select(rows, wd=0.0, seed=seed), key=lambda r: r["step"])
    return next((h for h in history if h["accuracy"] >= target_accuracy), history[-1])


def seed_table(groups: dict[str, Sequence[dict]], measures: Sequence[str], spec: str = ".1f") -> str:
    """One line per group (``label: measure ≈mean ± sd | ...``), the mean and sample standard deviation
    over the group's rows (one per seed)."""
    width = max(map(len, groups))
    return "\n".join(f"{label:<{width}}  " + " | ".join(f"{m} {spread_text(rows, m, spec)}" for m in measures)
                     for label, rows in groups.items())


def pooled_points(rows: Sequence[dict], key: str) -> list[dict]:
    r"""The seed means of ``key`` for every distinct (batch, lr, wd, step) with :math:`t > 0`, with the
    number of decay times :math:`\mu\,\mathrm{wd}\,t` (the abscissa of the accounting figure)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["step"] > 0:
            groups.setdefault((r["batch"], r["lr"], r["wd"], r["step"]), []).append(r)
    return [{"batch": b, "lr": lr, "wd": wd, "step": t, "decay times": lr * wd * t, key: seed_stats(g, key)[0]}
            for (b, lr, wd, t), g in sorted(groups.items())]


def plot_seed_means(ax, xs: Sequence, groups: Sequence[Sequence[dict]], key: str, **style) -> None:
    """Seed means of ``key`` against ``xs`` with bars from the smallest to the largest seed."""
    stats = np.array([seed_stats(g, key) for g in groups])
    ax.errorbar(xs, stats[:, 0], yerr=[stats[:, 0] - stats[:, 2], stats[:, 3] - stats[:, 0]], capsize=3, **style)


def plot_accounting(axes, rows: Sequence[dict], keys: Sequence[str], markers: dict[int, str]) -> None:
    r"""The accounting figure: for each measure in ``keys`` the seed mean of every (batch, lr, wd, step)
    against the number of decay times :math:`\mu\,\mathrm{wd}\,t`, one marker per batch size."""
    for ax, key in zip(axes, keys, strict=True):
        points = pooled_points(rows, key)
        for b, marker in markers.items():
            mine = [p for p in points if p["batch"] == b]
            ax.scatter([p["decay times"] for p in mine], [p[key] for p in mine], marker=marker, s=18, label=f"B = {b}")
        ax.set(xlabel=r"decay times $\mu\,\mathrm{wd}\,t$", ylabel=f"mean {key}", xscale="symlog", xlim=(-0.05, None))
    axes[0].legend(fontsize=7)


def batch_rate_grid(widths: Sequence[int], split, seeds: Sequence[int], *, grid_size: int, steps: int, epochs: float,
                    weight_decays: Sequence[float] = (0.0, 1e-3, 5e-3)) -> dict:
    r"""The ``full`` profile's grid: seed-mean count rank (1e-3) over ``grid_size`` batch sizes (4 to 256,
    geometric) times ``grid_size`` rates (0.02 to 0.3) for each weight decay, at ``steps`` steps and at
    ``epochs`` epochs (:math:`\lceil EN/B\rceil` steps). Returns ``batches``, ``rates`` and one
    rate-by-batch array per ``(wd, "steps" | "epochs")``."""
    from theorylab import training

    if grid_size < 2:
        raise ValueError(f"grid_size: got {grid_size}, expected at least 2")
    batches = [int(b) for b in np.unique(np.geomspace(4, 256, grid_size).round().astype(int))]
    rates = [float(r) for r in np.geomspace(0.02, 0.3, grid_size)]
    settings = [dict(lr=lr, wd=wd) for wd in weight_decays for lr in rates]
    out: dict = {"batches": batches, "rates": rates}
    for wd in weight_decays:
        for protocol in ("steps", "epochs"):
            out[wd, protocol] = np.zeros((len(rates), len(batches)))
    for j, b in enumerate(batches):
        by_epochs = training.steps_for_epochs(len(split.y_train), b, epochs)
        rows = stacked_sweep(widths, split, settings, seeds, batch=b, steps=max(steps, by_epochs),
                             measure_at=[steps, by_epochs])
        for wd in weight_decays:
            for i, lr in enumerate(rates):
                for protocol, t in (("steps", steps), ("epochs", by_epochs)):
                    out[wd, protocol][i, j] = seed_stats(select(rows, lr=lr, wd=wd, step=t), "count rank 0.001")[0]
    return out


def plot_grid(fig, axes, contours: dict) -> None:
    """Contour plots of :func:`batch_rate_grid`: one column per weight decay, one row per protocol."""
    decays = sorted({k[0] for k in contours if isinstance(k, tuple)})
    for col, wd in enumerate(decays):
        for row, protocol in enumerate(("epochs", "steps")):
            ax = axes[row, col]
            filled = ax.contourf(contours["batches"], contours["rates"], contours[wd, protocol],
                                 levels=np.linspace(0, 100, 11))
            ax.set(xscale="log", yscale="log", xlabel="B", ylabel="μ", title=f"wd={wd:g}, fixed {protocol}")
    fig.subplots_adjust(wspace=0.45, hspace=0.5)
    fig.colorbar(filled, ax=axes, label="mean count rank (ε = 1e-3)")
