"""Curve statistics with bootstrap intervals: AUC, final return, steps to 80 %, ratios to the DQN.

numpy only (the report, which must not import JAX, uses it too).

Data layout: a set of learning curves ``curves_SxKxP`` -- S rows, K evaluation tasks, P grid
points of env steps ``grid_P``. What a row is decides how it is resampled:
- *crossed* rows (imitators, ED, the context-ablated control): S independently trained networks,
  each evaluated on the same K tasks, so seeds and tasks are crossed factors;
- *per-cell* rows (the fresh DQN, the random policy; ``PER_CELL``): learner (r, k) draws its own
  key from (r, k), so row r on task k shares nothing with row r on task k'. There is no "DQN
  seed r" to resample across tasks: the S rows of a task are averaged first, and only tasks are
  resampled (resampling rows as well would add a seed variance that does not exist and widen
  every interval, by a third at the planned scale in simulation).

Why a crossed (two-way) bootstrap rather than a flat one over the S*K cells: cells that share a
training seed are correlated (one bad imitator drags down all its tasks), and so are cells that
share a task (a far goal is hard for everyone). A flat bootstrap treats the S*K cells as
independent and gives intervals that are too narrow whenever seed-to-seed variation matters,
which is exactly what a claim about "an imitator" must include. Resampling seeds and tasks
independently with replacement in each replicate (Owen 2007, "the pigeonhole bootstrap") keeps
both sources of variance. With one seed, or per-cell rows, it reduces to the ordinary bootstrap
over tasks.

Few seeds make the intervals too narrow when seeds differ much: a percentile bootstrap over S
seeds sees their spread shrunk by (S - 1) / S and cannot show the heavy tails of a mean of few.
In a simulation of the planned scale (17 tasks, 5 DQN seeds, true AUC ratio 1, 300 runs; the
model of ``tests/test_stats.py``), the 95% interval of the AUC ratio held the truth 95% of the
time when the 5 imitator seeds differed little (seed s.d. 0.5 against a task and cell s.d. of
1), but 85% when their differences dominated (seed s.d. 2), 93% with 10 such seeds and 62% with
2. So
:func:`summarize_test` also returns each seed's own AUC ratio, which the report prints beside
the interval.

Ratios imitator/DQN are bootstrapped as ratios: in each replicate the SAME resampled tasks are used
for both (they are paired by task; the fresh DQNs draw their own environment randomness, which
their keys also use for exploration), the imitator's seeds are resampled independently of the
tasks, the metric is computed on each side's mean curve, and the ratio of the two is one
replicate. The interval is the percentile interval of those ratios -- never a ratio of two
intervals. Ratios use means over cells (ratio of means), which stays defined when single tasks
have a return near zero.

Comparisons are paired the same way: "the imitator beats a control" is the interval of the AUC
difference imitator - control (:func:`difference`: shared tasks, and shared seeds where both sides
are imitators with as many seeds: seed s of each starts from the same initial weights and acts with
the same env keys), and "an agent improves" the interval of its own final - initial return
(``gain``, both from the same replicate). Asking instead whether two separate intervals are apart
would keep the task-to-task spread, which pairing cancels, and test at about the 99.5 % level. With
the task spread cancelled, the seeds' own differences are what is left, so the few-seeds limit
above applies to differences too: in simulation (5 imitator seeds against 3 control seeds, 17
tasks, 200 runs) the 95 % interval held the true difference 97 % of the time when the seeds
differed little, 86 % when their differences dominated (``tests/test_stats.py``).

Metrics of one (mean) curve:
- ``auc``: the mean return over the grid points (the area under the curve divided by its length,
  in return units, so it compares across runs of different length);
- ``initial``: the first grid point (the episodes that ended by then: how the agent starts,
  from an empty context for an imitator);
- ``final``: the mean of the last ``final_frac`` of the grid points (at least one);
- ``steps_to``: the first grid step where the curve reaches a threshold (``inf`` if never).
  The threshold is 80 % of the DQN's final return measured from ``floor`` (0 by default, the
  minimum return of the grid worlds): ``floor + 0.8 * (dqn_final - floor)``. It is undefined
  (NaN) when the DQN's final return is not above ``floor``: the threshold would then lie at or
  below the floor, every agent would "reach" it at the first grid point, and the ratio would
  read 1 for an agent that learned nothing.

Few tasks. Every interval resamples the K tasks (columns), the one unit every agent shares, and
a percentile bootstrap over few units is far too narrow: with one task there is nothing to
resample (one seed gives an interval of zero width), and in simulation (300 runs each) the 95%
interval of one agent's mean return over K tasks (one seed, cells s.d. 1) held the truth 56% of
the time with K = 2, 75% with 3 and 88% with 5. Paired ratios suffer less where the task spread
cancels (5 seeds, tasks s.d. 2, cells s.d. 1: 90% with K = 2), but the gains that the
preconditions and "improves" judge are one agent's own. Below ``MIN_TASKS`` (5, where coverage
meets the few-seeds figure above) every interval is undefined (NaN), so a criterion reads
"unclear" and no verdict is clear; the point estimates remain.

Undefined replicates. A ratio replicate is NaN where it means nothing (see :func:`_ratio` and
the steps-to rule above). :func:`interval` drops such replicates, but when more than
``MAX_UNDEFINED_FRAC`` of them are NaN the rest are a biased subsample (the replicates dropped
are those whose resampled DQN and agent both sat at or below zero, or whose DQN did not learn),
so the interval is undefined too. Replicates where the agent is above zero and the DQN is not
are +inf (the agent is ahead), never dropped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

DEFAULT_FINAL_FRAC = 0.1
DEFAULT_CONFIDENCE = 0.95
DEFAULT_BOOTSTRAP = 1000
FRACTION_OF_DQN = 0.8
MAX_UNDEFINED_FRAC = 0.05  # more NaN replicates than this: the interval is undefined
MIN_TASKS = 5  # fewer tasks (columns K) than this: no interval (see "Few tasks" above)
# Agents whose rows are independent learners per (row, task), not networks shared by every task.
PER_CELL = ("dqn", "random")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile-bootstrap interval."""

    value: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float | None]:
        return {"value": _json_float(self.value), "lo": _json_float(self.lo),
                "hi": _json_float(self.hi)}

    def __str__(self) -> str:
        return f"{fmt(self.value)} [{fmt(self.lo)}, {fmt(self.hi)}]"


def _json_float(x: float) -> float | str | None:
    """Strict JSON has no NaN/inf: NaN -> None (undefined), +-inf -> "inf"/"-inf" ("never")."""
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


# ---------------------------------------------------------------------------------------------
# Metrics of curves (vectorised over leading axes)
# ---------------------------------------------------------------------------------------------

def auc(curve_xP: np.ndarray) -> np.ndarray:
    """Mean return over the grid points: [...]."""
    return np.mean(curve_xP, axis=-1)


def initial(curve_xP: np.ndarray) -> np.ndarray:
    """The first grid point: [...]. Not a fraction of the window like ``final``: an imitator that
    learns in context can do so within the first tenth of it (histories subsampled k-fold run
    k times ahead of the DQN), and a start averaged over that learning would hide it."""
    return np.asarray(curve_xP)[..., 0]


def final(curve_xP: np.ndarray, final_frac: float = DEFAULT_FINAL_FRAC) -> np.ndarray:
    """Mean of the last ``final_frac`` of the grid points (at least one): [...]."""
    p = curve_xP.shape[-1]
    n = max(1, int(round(final_frac * p)))
    return np.mean(curve_xP[..., p - n:], axis=-1)


def steps_to(curve_xP: np.ndarray, grid_P: np.ndarray, threshold_x: np.ndarray) -> np.ndarray:
    """First grid step at which the curve is >= threshold; ``inf`` if it never is: [...]."""
    reached_xP = curve_xP >= np.asarray(threshold_x)[..., None]
    first_x = np.argmax(reached_xP, axis=-1)
    steps_x = np.asarray(grid_P, np.float64)[first_x]
    return np.where(reached_xP.any(axis=-1), steps_x, np.inf)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b where the reference b is positive; +inf where a is positive and b is not (the agent
    is ahead of a reference at or below zero); NaN (undefined) otherwise, 0/0 included.

    A ratio to the DQN only means "fraction of the DQN's return" when the DQN's value is
    positive: with negative returns (Acrobot, MountainCar) a worse agent would get a ratio above
    1. Such replicates are undefined (NaN), so the interval and the verdict say so instead of
    reading a flipped ratio as a match. 0/0 is NaN rather than 1: a DQN flat at zero learned
    nothing, and a random policy also at zero must not "match" it. inf/inf (neither reaches
    80 %) and NaN inputs (steps-to-80 % of a DQN that did not learn) are NaN too. A positive
    return against one at or below zero is +inf, not NaN: dropping those replicates as
    undefined would drop exactly the ones most favourable to the agent.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, np.divide(a, b), np.where((a > 0) & (b <= 0), np.inf, np.nan))


# ---------------------------------------------------------------------------------------------
# Crossed bootstrap
# ---------------------------------------------------------------------------------------------

def _check(curves_SxKxP: np.ndarray) -> np.ndarray:
    c = np.asarray(curves_SxKxP, np.float64)
    if c.ndim != 3:
        raise ValueError(f"curves must be [S, K, P], got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("curves must be finite (start the grid after the first episode ends)")
    return c


def rows(curves_SxKxP: np.ndarray, crossed: bool) -> np.ndarray:
    """The rows the bootstrap resamples: [S, K, P] as they are for crossed rows (training
    seeds), or [1, K, P], the per-task mean, for per-cell rows (see the module docstring)."""
    c = _check(curves_SxKxP)
    return c if crossed else c.mean(axis=0, keepdims=True)


def resample_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Bootstrap counts: float [n_boot, n], each row a multinomial(n, uniform) draw / n."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) / n


def mean_curves(curves_SxKxP: np.ndarray, w_BxS: np.ndarray, w_BxK: np.ndarray) -> np.ndarray:
    """Mean curve of each replicate of the crossed bootstrap: [B, P]."""
    return np.einsum("bs,skp,bk->bp", w_BxS, curves_SxKxP, w_BxK)


def interval(point: float, replicates_B: np.ndarray, confidence: float,
             tasks: int | None = None) -> Estimate:
    """Percentile interval of bootstrap replicates [B] (no interpolation, so inf stays inf);
    undefined (NaN) when the replicates resampled fewer than ``MIN_TASKS`` ``tasks``.

    NaN (undefined) replicates are dropped when they are at most ``MAX_UNDEFINED_FRAC`` of the
    B; above that, lo and hi are NaN (undefined), so a verdict reads "unclear". Why not keep
    dropping them: the replicates that are NaN are not a random subset (they are those whose
    resampled DQN and agent sat at or below zero, or whose DQN never learned), so the rest would
    be labelled a ``confidence`` interval without covering that often.
    """
    r = np.asarray(replicates_B, np.float64)
    undefined = np.isnan(r)
    too_few_tasks = tasks is not None and tasks < MIN_TASKS
    if r.size == 0 or undefined.mean() > MAX_UNDEFINED_FRAC or too_few_tasks:
        return Estimate(float(point), math.nan, math.nan)
    r = r[~undefined]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(r, [alpha, 1.0 - alpha], method="inverted_cdf")
    return Estimate(float(point), float(lo), float(hi))


def curve_band(curves_SxKxP: np.ndarray, *, n_boot: int = DEFAULT_BOOTSTRAP,
               confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
               crossed: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean curve and its pointwise bootstrap interval: three float arrays [P]. ``crossed``:
    the rows are training seeds (else per-cell learners, see :func:`rows`)."""
    c = rows(curves_SxKxP, crossed)
    s, k, _ = c.shape
    rng = np.random.default_rng(seed)
    reps_BxP = mean_curves(c, resample_weights(rng, s, n_boot), resample_weights(rng, k, n_boot))
    alpha = (1.0 - confidence) / 2.0
    lo_P, hi_P = np.quantile(reps_BxP, [alpha, 1.0 - alpha], axis=0, method="inverted_cdf")
    return c.mean(axis=(0, 1)), lo_P, hi_P


def describe(curves_SxKxP: np.ndarray, *, n_boot: int = DEFAULT_BOOTSTRAP,
             confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
             final_frac: float = DEFAULT_FINAL_FRAC, crossed: bool = True) -> dict[str, Estimate]:
    """AUC, initial, final return and ``gain`` (final - initial, both from each replicate: the
    agent improved if its interval lies above 0) of one agent's curves [S, K, P], with bootstrap
    intervals. ``crossed``: the rows are training seeds (else per-cell learners, see
    :func:`rows`)."""
    c = rows(curves_SxKxP, crossed)
    s, k, _ = c.shape
    rng = np.random.default_rng(seed)
    reps_BxP = mean_curves(c, resample_weights(rng, s, n_boot), resample_weights(rng, k, n_boot))
    mean_P = c.mean(axis=(0, 1))
    init, fin = initial(mean_P), final(mean_P, final_frac)
    init_B, fin_B = initial(reps_BxP), final(reps_BxP, final_frac)
    return {"auc": interval(auc(mean_P), auc(reps_BxP), confidence, k),
            "initial": interval(init, init_B, confidence, k),
            "final": interval(fin, fin_B, confidence, k),
            "gain": interval(fin - init, fin_B - init_B, confidence, k)}


def difference(a_SxKxP: np.ndarray, b_TxKxP: np.ndarray, *, crossed_a: bool = True,
               crossed_b: bool = True, n_boot: int = DEFAULT_BOOTSTRAP,
               confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> Estimate:
    """AUC of a minus AUC of b on the same K tasks and grid, paired by task: each replicate
    resamples the tasks once for both. a beats b if the interval lies above 0.

    Two crossed sides with as many seeds are paired by seed too (seed s of each drawn together): in
    climit the imitator's and a control's seed s start from the same initial weights, draw the same
    training batches where they train on the same data (the sampler is keyed by run.seed and the
    seed index) and act with the same env keys (evaluate.stacked_imitator_steps), so what they
    share cancels as the task effects do. The pairs (a_s, b_s) are independent of each other, which
    is all a paired bootstrap needs: were the sides independent, it would estimate the same spread
    as drawing each side's seeds on its own. Otherwise (a per-cell side, or unequal seed counts)
    each side's seeds are drawn on their own."""
    a, b = rows(a_SxKxP, crossed_a), rows(b_TxKxP, crossed_b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"curves {a.shape} and {b.shape} need the same tasks and grid")
    rng = np.random.default_rng(seed)
    w_task_BxK = resample_weights(rng, a.shape[1], n_boot)
    w_a_BxS = resample_weights(rng, a.shape[0], n_boot)
    paired = crossed_a and crossed_b and a.shape[0] == b.shape[0]
    w_b_BxS = w_a_BxS if paired else resample_weights(rng, b.shape[0], n_boot)
    a_BxP = mean_curves(a, w_a_BxS, w_task_BxK)
    b_BxP = mean_curves(b, w_b_BxS, w_task_BxK)
    point = auc(a.mean(axis=(0, 1))) - auc(b.mean(axis=(0, 1)))
    return interval(point, auc(a_BxP) - auc(b_BxP), confidence, a.shape[1])


def compare(agent_SxKxP: np.ndarray, dqn_RxKxP: np.ndarray, grid_P: np.ndarray, *,
            n_boot: int = DEFAULT_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
            final_frac: float = DEFAULT_FINAL_FRAC, floor: float = 0.0,
            crossed: bool = True) -> dict[str, Estimate]:
    """An agent against the DQN on the same K tasks and grid, with paired-task bootstrap ratios.

    Returns Estimates under: ``agent_auc``, ``dqn_auc``, ``auc_ratio``, ``agent_final``,
    ``dqn_final``, ``final_ratio``, ``agent_steps_to_80``, ``dqn_steps_to_80``,
    ``steps_to_80_ratio`` (agent / DQN; > 1 means the agent is slower; inf if the agent never
    reaches the DQN's 80 % level). Inputs: agent curves [S, K, P], DQN curves [R, K, P] on the
    same K tasks, ``grid_P`` [P] env steps. The steps-to-80 % entries are NaN (undefined) in
    each replicate whose DQN final return is not above ``floor`` (the DQN did not learn); every
    ratio is NaN where the DQN's value is not positive (see :func:`_ratio`). The DQN's rows are
    per-cell learners (averaged per task); ``crossed``: the agent's rows are training seeds.
    """
    a, d = rows(agent_SxKxP, crossed), rows(dqn_RxKxP, crossed=False)
    if a.shape[1:] != d.shape[1:] or a.shape[2] != len(grid_P):
        raise ValueError(f"agent {a.shape} and DQN {d.shape} curves need the same tasks and grid "
                         f"of {len(grid_P)} points")
    rng = np.random.default_rng(seed)
    w_task_BxK = resample_weights(rng, a.shape[1], n_boot)  # shared: tasks are paired
    a_BxP = mean_curves(a, resample_weights(rng, a.shape[0], n_boot), w_task_BxK)
    d_BxP = mean_curves(d, resample_weights(rng, d.shape[0], n_boot), w_task_BxK)
    a_P, d_P = a.mean(axis=(0, 1)), d.mean(axis=(0, 1))

    def metrics(agent: np.ndarray, dqn: np.ndarray) -> dict[str, np.ndarray]:
        dqn_final = final(dqn, final_frac)
        threshold = floor + FRACTION_OF_DQN * (dqn_final - floor)
        # A DQN at or below the floor learned nothing: its 80 % level is no level (undefined).
        learned = dqn_final > floor
        out = {"agent_auc": auc(agent), "dqn_auc": auc(dqn),
               "agent_final": final(agent, final_frac), "dqn_final": dqn_final,
               "agent_steps_to_80": np.where(learned, steps_to(agent, grid_P, threshold), np.nan),
               "dqn_steps_to_80": np.where(learned, steps_to(dqn, grid_P, threshold), np.nan)}
        for m in ("auc", "final", "steps_to_80"):
            out[f"{m}_ratio"] = _ratio(out[f"agent_{m}"], out[f"dqn_{m}"])
        return out

    point, reps = metrics(a_P, d_P), metrics(a_BxP, d_BxP)
    return {name: interval(point[name], reps[name], confidence, a.shape[1]) for name in point}


def fmt(x: float | None, digits: int = 3, *, inf: str = "inf") -> str:
    """A number for a table: NaN/None -> 'n/a', +inf -> ``inf`` (e.g. 'never' for steps)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return inf if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def estimate_from_dict(d: dict[str, Any]) -> Estimate:
    """Inverse of :meth:`Estimate.to_dict` (None -> NaN)."""
    conv = lambda v: math.nan if v is None else float(v)  # float("inf") parses "inf"
    return Estimate(conv(d["value"]), conv(d["lo"]), conv(d["hi"]))


def summarize_test(curves: dict[str, np.ndarray], grid_P: np.ndarray, *,
                   window: tuple[float, float] = (-math.inf, math.inf),
                   n_boot: int = DEFAULT_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
                   seed: int = 0, final_frac: float = DEFAULT_FINAL_FRAC,
                   floor: float = 0.0) -> dict[str, Any]:
    """Every statistic of one claim test, JSON-ready.

    ``curves`` maps agent name -> curves [S_agent, K, P] on ``grid_P`` (the same K tasks for all;
    one entry must be ``"dqn"``). Metrics use the grid points in ``(window[0], window[1]]`` only
    (test (b): from H to horizon_factor x H); steps to 80% count env steps from ``window[0]``
    (0 if it is ``-inf``; ``steps_counted_from``). Returns ``{"window", "grid_points",
    "steps_counted_from", "tasks", "seeds", "agents": {name: describe()}, "vs_dqn":
    {name: compare()}, "imitator_vs": {name: {"auc_diff": difference()}}, "auc_ratio_per_seed":
    {name: [S]}}`` with every Estimate as a dict; ``imitator_vs`` (the imitator's AUC minus each
    control's) is there when ``curves`` has an ``"imitator"``. Agents named in ``PER_CELL`` are
    resampled as per-cell rows, the others as crossed training seeds.
    """
    if "dqn" not in curves:
        raise ValueError("summarize_test needs a 'dqn' entry")
    grid_P = np.asarray(grid_P)
    sel_P = (grid_P > window[0]) & (grid_P <= window[1])
    if not sel_P.any():
        raise ValueError(f"no grid point in window {window}")
    grid_W = grid_P[sel_P]
    # Steps to 80% count from the window's start (test (b): env steps after H), so that its
    # ratio compares the time each agent took inside the window, not that time plus H.
    since_W = grid_W - (window[0] if math.isfinite(window[0]) else 0)
    kw = dict(n_boot=n_boot, confidence=confidence, seed=seed, final_frac=final_frac)
    for name, c in curves.items():
        if not np.isfinite(np.asarray(c, np.float64)).all():
            raise ValueError(f"the curves of {name} hold NaN or inf: a NaN reward or return in "
                             f"its rollout, or a grid that starts before the first episode ends")
    curves_W = {name: _check(c)[..., sel_P] for name, c in curves.items()}
    dqn_W = curves_W["dqn"]
    agents, vs_dqn, imitator_vs = {}, {}, {}
    for name, c_W in curves_W.items():
        crossed = name not in PER_CELL
        agents[name] = {m: e.to_dict() for m, e in describe(c_W, crossed=crossed, **kw).items()}
        if name != "dqn":
            vs_dqn[name] = {m: e.to_dict() for m, e in compare(c_W, dqn_W, since_W, floor=floor,
                                                               crossed=crossed, **kw).items()}
        if "imitator" in curves_W and name not in ("imitator", "dqn"):
            imitator_vs[name] = {"auc_diff": difference(
                curves_W["imitator"], c_W, crossed_b=crossed, n_boot=n_boot,
                confidence=confidence, seed=seed).to_dict()}
    dqn_auc = float(auc(dqn_W.mean(axis=(0, 1))))
    # Each training seed's own AUC ratio (its mean over tasks against the DQN's mean): the
    # spread a reader should see beside an interval from few seeds. Per-cell rows (the random
    # policy's) are not seeds: row r on one task has nothing to do with row r on another.
    per_seed = {name: [_json_float(_ratio(a, dqn_auc)) for a in auc(_check(c)[..., sel_P].mean(1))]
                for name, c in curves.items() if name not in PER_CELL}
    return {"window": [int(grid_W[0]), int(grid_W[-1])], "grid_points": int(sel_P.sum()),
            "steps_counted_from": int(grid_W[0] - since_W[0]),
            "tasks": int(dqn_W.shape[1]), "seeds": {n: int(c.shape[0]) for n, c in curves.items()},
            "agents": agents, "vs_dqn": vs_dqn, "imitator_vs": imitator_vs,
            "auc_ratio_per_seed": per_seed}
