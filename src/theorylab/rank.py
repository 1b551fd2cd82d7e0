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
    """A float64 matrix on the host: 2-d weights as they are, convolution kernels reshaped (one copy off
    the device, then the conversion: float32 to float64 is exact)."""
    tensor = torch.as_tensor(weight).detach().cpu().to(torch.float64)
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
    ``tail rank EPS`` (:math:`\mathrm{rank}^{\rm tail}_\varepsilon`) and ``stable rank`` (:math:`\|W\|_F^2/\sigma_1^2`);
    every measure is NaN for a matrix with a non-finite entry (a diverged run)."""
    matrix = as_matrix(weight)
    if not bool(torch.isfinite(matrix).all()):
        return {**{f"count rank {e:g}": math.nan for e in eps}, **{f"tail rank {e:g}": math.nan for e in tail_eps},
                "stable rank": math.nan}
    s = torch.linalg.svdvals(matrix).numpy()
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
    device = split.x_train.device
    weights = [torch.stack([run[k].weight.detach() for run in layers]).to(device).requires_grad_()
               for k in range(len(widths) - 1)]
    biases = [torch.stack([run[k].bias.detach() for run in layers]).to(device).requires_grad_()
              for k in range(len(widths) - 1)]
    lr = torch.tensor([float(c["lr"]) for c in configs], device=device)
    wd = torch.tensor([float(c["wd"]) for c in configs], device=device)
    n = len(split.y_train)
    index = torch.stack([torch.stack([torch.randint(0, n, (batch,), generator=g) for _ in range(steps)])
                         for g in (torch.Generator().manual_seed(int(c["seed"])) for c in configs)]
                        ).to(device)  # (runs, steps, B), drawn on the host as on the CPU
    measure = measure or (lambda ws, run: {})
    records: dict[int, list[dict]] = {}
    wanted = {*measure_at, steps}

    def record(step):
        with torch.no_grad():
            logits = _stacked_forward(weights, biases, split.x_test.expand(len(configs), *split.x_test.shape))
            acc = (logits.argmax(-1) == split.y_test).float().mean(1).tolist()
            host = [w.detach().cpu() for w in weights]  # one copy off the device per measured step
        records[step] = [{**measure([w[r] for w in host], r), "test accuracy": acc[r]}
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
    return StackedRuns(configs=[dict(c) for c in configs], records=records, weights=[w.detach().cpu() for w in weights])


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
    model = training.mlp(widths).to(split.x_train.device)  # initialised on the host, trained on the data's device
    middle = training.weight_matrices(model)[1]
    result = training.train_sgd(model, split, batch=batch, lr=lr, wd=wd, steps=steps, seed=seed, unroll=(middle, window),
                                check_gradients=check_gradients, record_every=1,
                                record=lambda m: {"norm": middle.detach().norm()})  # a tensor: no sync per step
    tracker = result.unrolled
    found = certificate(tracker.start, middle, tracker.total, decay_factor(tracker.lrs, wd), window, rank_per_step=batch)
    norms = torch.stack([result.history[steps - n]["norm"] for n in range(scan + 1)]).tolist()  # one host copy
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
            model = training.small_cnn(channels).to(split.x_train.device)
            kernel = training.weight_matrices(model)[1]
            result = training.train_sgd(model, split, batch=batch, lr=lr, wd=wd, steps=steps, seed=s,
                                        record_every=record_every,
                                        record=lambda m, k=kernel: {"rank": count_rank(k, 1e-3),
                                                                    "accuracy": training.accuracy(m, split.x_test, split.y_test)})
            rows += [{"wd": wd, "seed": s, **h} for h in result.history]
    return rows


def cnn_runs_on(device: str, split, weight_decays: Sequence[float], seeds: Sequence[int], **options) -> list[dict]:
    """:func:`cnn_runs` with ``split`` moved to ``device`` first (for a separate process: a split is
    passed on the host and moved there)."""
    return cnn_runs(on_device(split, device), weight_decays, seeds, **options)


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
    axes[0].legend()


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


def on_device(split, device):
    """``split`` (a :class:`theorylab.data.Split`) with its four tensors on ``device`` (a no-op where they are)."""
    from theorylab.data import Split

    return Split(*(t.to(device) for t in (split.x_train, split.y_train, split.x_test, split.y_test)))


# --- the convolution operator ------------------------------------------------------------------------------------

OPERATOR_MIN_MAP = 8
"""Smallest map side on which :func:`layer_ranks` reports the circular operator's rank. The layers pad
with zeros; the circular operator differs from theirs in every row that touches the border, which on a
4x4 map is 12 of 16 positions and on a 2x2 map all of them (for a random 8->8 3x3 kernel at 2x2 the
largest singular values differ by about 40%), so there the stand-in says nothing about the layer."""


def conv_operator_singular_values(weight, input_size: Sequence[int]) -> np.ndarray:
    r"""Singular values of a stride-1 convolution with circular padding, as the linear map
    :math:`\mathbb R^{C_{\rm in}HW}\to\mathbb R^{C_{\rm out}HW}` on :math:`H\times W` inputs (sorted, float64).

    By Sedghi, Gupta and Long (2019, Theorem 6) they are the union over the :math:`HW` frequencies
    :math:`(u,v)` of the singular values of the :math:`C_{\rm out}\times C_{\rm in}` matrices
    :math:`P(u,v)=\sum_{p,q}K_{:,:,p,q}\,e^{-2\pi i(pu/H+qv/W)}`, the 2-d DFT of the kernel zero-filled (or,
    for a kernel larger than the input, wrapped) to :math:`H\times W`. The offset of the padding and
    correlation against convolution change :math:`P` only by phases and a reflection of the frequencies,
    so not the singular values. For zero padding (the networks' layers) this is only a stand-in: the
    operators differ in every row that touches the border, which dominates on small maps (see
    :data:`OPERATOR_MIN_MAP`)."""
    kernel = torch.as_tensor(weight).detach().cpu().to(torch.float64)
    if kernel.ndim != 4:
        raise ValueError(f"weight: expected a 4-d convolution kernel, got shape {tuple(kernel.shape)}")
    sizes = [int(s) for s in input_size]
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"input_size: got {tuple(input_size)}, expected two positive sizes (H, W)")
    height, width = sizes
    out_c, in_c, kh, kw = kernel.shape
    wrapped = torch.zeros(out_c, in_c, height, width, dtype=torch.float64)
    for p in range(kh):  # wrap taps beyond the input: circular convolution aliases them
        for q in range(kw):
            wrapped[:, :, p % height, q % width] += kernel[:, :, p, q]
    blocks = torch.fft.fft2(wrapped, dim=(2, 3)).permute(2, 3, 0, 1)  # (H, W, C_out, C_in)
    values = torch.linalg.svdvals(blocks).flatten().numpy()
    return np.sort(values)[::-1]


def conv_operator_rank(weight, input_size: Sequence[int], eps: float = 1e-3) -> int:
    r"""Count rank (D1) of the circular convolution operator: :math:`\#\{i:\sigma_i>\varepsilon\|T\|_F\}` over
    :func:`conv_operator_singular_values`, at most :math:`HW\min(C_{\rm in},C_{\rm out})`."""
    s = conv_operator_singular_values(weight, input_size)
    return int(np.count_nonzero(s > _check_eps(eps) * np.sqrt(np.sum(s ** 2))))


def conv_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, dict]:
    """For every ``Conv2d`` of ``model`` (by name) the spatial size of its input on ``x`` and its stride,
    read with forward hooks in eval mode."""
    found: dict[str, dict] = {}
    hooks = [m.register_forward_hook(lambda m, args, out, name=name: found.__setitem__(
        name, {"input_size": tuple(args[0].shape[-2:]), "stride": tuple(m.stride)}))
        for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found


# --- the paper's networks on an image set ------------------------------------------------------------------------

PAPER_NETWORKS = ("resnet18", "vgg16", "mlp_bn_wn")
PAPER_MILESTONES = (60, 100, 200)
"""The paper's code: ``MultiStepLR(milestones=[60, 100, 200], gamma=0.2)`` over 500 epochs."""


def paper_network(name: str, split, width: int) -> torch.nn.Module:
    """One of :data:`PAPER_NETWORKS` for ``split``'s images, on their device: ResNet-18 or VGG-16 with
    first-stage width ``width`` (the paper's 64), or the depth-10 MLP with batch and weight normalisation
    of width ``round(100 * width / 64)`` (the paper's 100 at ``width=64``)."""
    from theorylab import models

    shape, n_classes = tuple(split.x_train.shape[1:]), int(split.y_train.max()) + 1
    if name == "resnet18":
        model = models.resnet18(n_classes, shape[0], width=width)
    elif name == "vgg16":
        model = models.vgg16(n_classes, shape[0], width=width)
    elif name == "mlp_bn_wn":
        model = models.mlp_bn_wn(int(np.prod(shape)), n_classes, width=max(1, round(100 * width / 64)), depth=10)
    else:
        raise ValueError(f"name: got {name!r}, expected one of {list(PAPER_NETWORKS)}")
    return model.to(split.x_train.device)


def compressed_milestones(epochs: int, over: int = 200) -> tuple[int, ...]:
    """The paper's milestones below ``over`` epochs, rescaled so that its first ``over`` epochs last
    ``epochs``: ``round(m * epochs / over)`` (kept when at least 1 and below ``epochs``)."""
    scaled = (round(m * epochs / over) for m in PAPER_MILESTONES if m < over)
    return tuple(sorted({m for m in scaled if 1 <= m < epochs}))


def layer_ranks(model: torch.nn.Module, eps: float = 1e-3, conv_inputs_of: dict | None = None) -> list[dict]:
    r"""For every linear and convolutional weight of ``model`` (a weight-normalised layer's effective
    :math:`g\,V/\|V\|`), one row: ``name``, ``kind``, ``shape`` of the matrix (kernels reshaped to
    :math:`C_{\rm out}\times C_{\rm in}k^2`), ``full`` = its smaller side, ``rank`` = the count rank at
    ``eps`` (:math:`\#\{i:\sigma_i>\varepsilon\|W\|_F\}`, the paper's code at 1e-3) and ``stable rank``.
    With ``conv_inputs_of`` (from :func:`conv_inputs`) a stride-1 convolution on maps of at least
    :data:`OPERATOR_MIN_MAP` pixels a side also gets ``operator rank`` (:func:`conv_operator_rank`) and
    ``operator full`` = :math:`HW\min(C_{\rm in},C_{\rm out})`.
    The weights are copied to the host once, then measured in float64; a matrix with a non-finite entry
    (a diverged run) gets NaN ranks."""
    named = [(n, m.weight.detach()) for n, m in model.named_modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    host = [w.cpu() for _, w in named]
    rows = []
    for (name, _), w in zip(named, host, strict=True):
        matrix = as_matrix(w)
        row = {"name": name, "kind": "conv" if w.ndim == 4 else "linear", "shape": tuple(matrix.shape),
               "full": int(min(matrix.shape)), "rank": math.nan, "stable rank": math.nan}
        rows.append(row)
        if not bool(torch.isfinite(matrix).all()):  # a diverged run: no spectrum, NaN ranks
            continue
        s = torch.linalg.svdvals(matrix).numpy()
        row["rank"] = int(np.count_nonzero(s > _check_eps(eps) * np.sqrt(np.sum(s ** 2))))
        row["stable rank"] = float(np.sum(s ** 2) / s[0] ** 2)
        where = (conv_inputs_of or {}).get(name)
        if where is not None and where["stride"] == (1, 1) and min(where["input_size"]) >= OPERATOR_MIN_MAP:
            row["operator rank"] = conv_operator_rank(w, where["input_size"], eps)
            row["operator full"] = int(np.prod(where["input_size"]) * min(w.shape[:2]))
    return rows


def mean_rank(layers: Sequence[dict], key: str = "rank", relative: bool = False) -> float:
    """The mean over ``layers`` (rows of :func:`layer_ranks` that have ``key``) of ``key``, or of
    ``key / full`` with ``relative`` (the fraction of each matrix's possible rank)."""
    full = "operator full" if key == "operator rank" else "full"
    values = [r[key] / r[full] if relative else r[key] for r in layers if key in r]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class PaperRun:
    """:func:`train_paper_network`'s result (the model stays out: it would not survive a checkpoint on
    another device)."""

    network: str
    batch: int
    lr: float
    wd: float
    epochs: int
    milestones: tuple[int, ...]
    steps: int
    seconds: float
    test_accuracy: float
    train_accuracy: float
    layers: list[dict]
    history: list[dict]

    def summary(self) -> dict:
        """The run's setting with its accuracies and mean ranks (absolute and relative; the operator's only
        where some convolution has one, so that no always-NaN number reaches ``metrics.json``)."""
        summary = {"network": self.network, "batch": self.batch, "lr": self.lr, "wd": self.wd,
                   "epochs": self.epochs, "steps": self.steps, "test accuracy": self.test_accuracy,
                   "train accuracy": self.train_accuracy, "mean rank": mean_rank(self.layers),
                   "mean relative rank": mean_rank(self.layers, relative=True)}
        if any("operator rank" in row for row in self.layers):
            summary["mean operator rank"] = mean_rank(self.layers, "operator rank", relative=True)
        return summary


def train_paper_network(name: str, split, *, width: int, batch: int, lr: float, wd: float, epochs: int,
                        milestones: Sequence[int] = PAPER_MILESTONES, seed: int = 0, eps: float = 1e-3,
                        record_every: int = 0, operator: bool = True) -> PaperRun:
    r"""Train :func:`paper_network` ``name`` on ``split`` (on its device) as the paper's code does: plain
    SGD (no momentum, no augmentation) with weight decay, cross-entropy, ``epochs`` epochs of shuffled
    batches of ``batch`` and the step schedule
    :math:`\mu_e=\mu\cdot0.2^{|\{m\in\text{milestones}:m\le e\}|}`
    (:func:`theorylab.training.train_epochs`; initialisation after ``torch.manual_seed(seed)``).

    Returns the test and train accuracy, :func:`layer_ranks` at ``eps`` of every weight matrix (with the
    operator rank of each stride-1 convolution when ``operator``), and every ``record_every`` epochs the
    mean count rank (absolute and relative, :func:`mean_rank`) and the test accuracy. Milestones at or
    beyond ``epochs`` have no effect."""
    from theorylab import training

    torch.manual_seed(seed)
    model = paper_network(name, split, width)

    def record(m):
        layers = layer_ranks(m, eps)
        return {"mean rank": mean_rank(layers), "mean relative rank": mean_rank(layers, relative=True),
                "test accuracy": training.batched_accuracy(m, split.x_test, split.y_test)}

    result = training.train_epochs(model, split, batch=batch, lr=lr, wd=wd, epochs=epochs, milestones=milestones,
                                   gamma=0.2, seed=seed, record_every=record_every,
                                   record=record if record_every else None)
    where = conv_inputs(model, split.x_test[:2]) if operator else None
    return PaperRun(network=name, batch=batch, lr=lr, wd=wd, epochs=epochs, milestones=tuple(milestones),
                    steps=result.steps, seconds=result.seconds,
                    test_accuracy=training.batched_accuracy(model, split.x_test, split.y_test),
                    train_accuracy=training.batched_accuracy(model, split.x_train, split.y_train),
                    layers=layer_ranks(model, eps, where), history=result.history)


def protocol_epochs(batch: int, epochs: int, reference_batch: int, protocol: str) -> int:
    r"""Epochs of a run at ``batch``: ``epochs`` under ``"epochs"``; under ``"steps"`` the epochs that give
    the step count of ``epochs`` epochs at ``reference_batch``, :math:`\max(1,\mathrm{round}(E\,B/B_0))`
    (equal steps up to one epoch's rounding)."""
    if protocol == "epochs":
        return epochs
    if protocol == "steps":
        return max(1, round(epochs * batch / reference_batch))
    raise ValueError(f"protocol: got {protocol!r}, expected 'epochs' or 'steps'")


def paper_grid(name: str, split, *, width: int, batches: Sequence[int], rates: Sequence[float],
               weight_decays: Sequence[float], epochs: int, reference_batch: int, seed: int = 0,
               checkpoint=None) -> list[dict]:
    r"""The (batch, learning rate) grid of one paper network for every weight decay under both protocols:
    fixed ``epochs`` epochs, and fixed steps (those of ``epochs`` epochs at ``reference_batch``,
    :func:`protocol_epochs`). The schedule is :func:`compressed_milestones` of each run's epochs. One
    :meth:`PaperRun.summary` row per run, with ``protocol``; a run shared by both protocols (at
    ``reference_batch``) is trained once. ``checkpoint(name, compute)`` (a run's ``cfg.checkpoint``)
    saves each run as ``grid-K``, K its position in the grid's order, so an interrupted grid resumes."""
    if min(len(batches), len(rates)) < 2:
        raise ValueError(f"need at least 2 batch sizes and 2 rates for contours, got {list(batches)}, {list(rates)}")
    checkpoint = checkpoint or (lambda key, compute: compute())
    rows, done = [], {}
    for wd in weight_decays:
        for b in batches:
            for lr in rates:
                for protocol in ("epochs", "steps"):
                    e = protocol_epochs(b, epochs, reference_batch, protocol)
                    if (wd, b, lr, e) not in done:
                        done[wd, b, lr, e] = checkpoint(f"grid-{len(done)}", lambda b=b, lr=lr, wd=wd, e=e: (
                            train_paper_network(name, split, width=width, batch=b, lr=lr, wd=wd, epochs=e, seed=seed,
                                                milestones=compressed_milestones(e), operator=False).summary()))
                    rows.append({**done[wd, b, lr, e], "protocol": protocol})
    return rows


def grid_array(rows: Sequence[dict], wd: float, protocol: str, key: str = "mean rank") -> tuple[list, list, np.ndarray]:
    """Batches, rates and the rate-by-batch array of ``key`` for one weight decay and protocol of
    :func:`paper_grid`'s rows."""
    mine = [r for r in rows if r["protocol"] == protocol and math.isclose(r["wd"], wd, abs_tol=1e-15)]
    batches, rates = sorted({r["batch"] for r in mine}), sorted({r["lr"] for r in mine})
    values = np.full((len(rates), len(batches)), np.nan)
    for r in mine:
        values[rates.index(r["lr"]), batches.index(r["batch"])] = r[key]
    return batches, rates, values


def plot_paper_grid(fig, axes, rows: Sequence[dict], key: str = "mean rank") -> None:
    """Contours of ``key`` over (batch, rate) from :func:`paper_grid`'s rows: one column per weight decay,
    one row per protocol, one colour scale for all panels."""
    decays = sorted({r["wd"] for r in rows})
    top = float(np.nanmax([r[key] for r in rows]))  # a diverged run (NaN) is left blank
    for col, wd in enumerate(decays):
        for row, protocol in enumerate(("epochs", "steps")):
            batches, rates, values = grid_array(rows, wd, protocol, key)
            ax = axes[row, col]
            filled = ax.contourf(batches, rates, values, levels=np.linspace(0, top, 11))
            ax.set(xscale="log", yscale="log", xlabel="B", ylabel="μ", title=f"wd={wd:g}, fixed {protocol}")
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set_yticks(rates, [f"{r:g}" for r in rates])
            ax.minorticks_off()
    fig.subplots_adjust(wspace=0.45, hspace=0.5)
    fig.colorbar(filled, ax=axes, label=f"{key} (count rank, ε = 1e-3)")


def plot_paper_runs(axes, runs: Sequence[PaperRun], milestones: Sequence[int] = ()) -> None:
    """Left: test accuracy against the mean relative rank, one marker and colour per network, each point
    labelled with its weight decay. Right: the recorded mean relative rank against the epoch (line style
    by weight decay), with ``milestones`` dotted."""
    networks = list(dict.fromkeys(r.network for r in runs))
    decays = sorted({r.wd for r in runs})
    for k, net in enumerate(networks):
        for r in (r for r in runs if r.network == net):
            x, colour = mean_rank(r.layers, relative=True), f"C{k}"
            axes[0].scatter(x, r.test_accuracy, marker="osDv^"[k % 5], color=colour,
                            label=net if r.wd == decays[0] else None)
            axes[0].annotate(f"{r.wd:g}", (x, r.test_accuracy), fontsize=8)
            axes[1].plot([h["epoch"] for h in r.history], [h["mean relative rank"] for h in r.history],
                         ls=("-", "--", ":", "-.")[decays.index(r.wd) % 4], color=colour, label=f"{net}, wd={r.wd:g}")
    for m in milestones:
        axes[1].axvline(m, color="0.5", lw=0.8, ls=":")
    axes[0].set(xlabel="mean rank / full rank", ylabel="test accuracy", title="labels: wd")
    axes[1].set(xlabel="epoch", ylabel="mean rank / full rank")
    axes[0].legend()
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
