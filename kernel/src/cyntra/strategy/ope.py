"""Off-policy evaluation: what would a strategy's mean utility have been, from logged decisions?

Estimators (numpy only), for logged tuples (context cell, applied action, propensity, reward) and a
target policy π (deterministic: one action per decision, or a distribution over actions):

* IPS — ``mean(w·r)`` with ``w = π(a_logged|x) / propensity``; unbiased when every action π can
  take had positive logging probability, high variance.
* SNIPS — ``Σ w·r / Σ w``; slightly biased, much lower variance.
* DR — ``mean(Σ_a π(a|x)·q̂(x,a) + w·(r − q̂(x,a_logged)))``; unbiased if either the propensities or
  the reward model q̂ is right (our propensities are logged exactly). The default q̂ is the mean
  reward per (action, coarse context cell), shrunk towards the action's mean, which is shrunk
  towards the global mean (pseudo-count :data:`SHRINKAGE`); it is refitted in every bootstrap
  resample so the interval includes its uncertainty. A caller may pass its own q̂ matrix.

Every estimate comes with a seeded percentile bootstrap interval (:data:`N_BOOT` resamples of the
decisions, or of whole issues with ``groups`` -- what the ledger bridge uses, since an issue's
retries depend on its earlier outcomes; 95 %), and the run with support diagnostics. No number is reported (``estimate=None``
with a ``reason``) when the log cannot support one — :class:`SupportThresholds`:

* fewer than ``min_matches`` (30) decisions where the logger took an action the target takes;
* more than ``max_unsupported_fraction`` (1 %) of decisions where the target puts mass on an
  action whose logging probability was zero (or is unknown: with no full logging distribution,
  only the logged action's probability is known, and other actions count as unsupported unless
  the logger was deterministic, in which case they are known to be zero);
* an effective sample size ``(Σw)²/Σw²`` below ``min_ess`` (10).

The second half of the module turns a decisions ledger into those arrays, for the built-in
targets ``heuristic`` and ``candidate`` (see :func:`ledger_ope`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from cyntra.planner.action_space import ACTION_FIELDS, PlanAction
from cyntra.strategy.clamp import Violation
from cyntra.strategy.ledger import JoinedDecision
from cyntra.strategy.record import DecisionRecord, Proposal

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

N_BOOT = 1000
ALPHA = 0.05
SHRINKAGE = 5.0
SUPPORT_EPS = 1e-12


class SupportThresholds(BaseModel):
    """When to refuse a number (module docstring explains each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_matches: int = 30
    max_unsupported_fraction: float = 0.01
    min_ess: float = 10.0


DEFAULT_THRESHOLDS = SupportThresholds()


class Estimate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    estimate: float | None
    lower: float | None = None
    upper: float | None = None
    reason: str | None = None


class SupportDiagnostics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int
    matches: int  # decisions where π put mass on the logged action
    support_fraction: float  # decisions where every action π may take had positive logging probability
    unsupported_fraction: float
    unsupported_mass: float  # mean π-mass on actions with zero (or unknown) logging probability
    max_weight: float
    ess: float
    min_propensity: float | None


class OPEResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str
    n: int
    refused: bool
    reason: str | None
    ips: Estimate
    snips: Estimate
    dr: Estimate
    diagnostics: SupportDiagnostics
    reward_model: str
    thresholds: SupportThresholds


def effective_sample_size(weights: npt.ArrayLike) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` (0 when every weight is 0)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sq if sq > 0 else 0.0


def fit_reward_model(
    cells: npt.ArrayLike,
    actions: npt.ArrayLike,
    rewards: npt.ArrayLike,
    n_cells: int,
    n_actions: int,
    *,
    shrinkage: float = SHRINKAGE,
    sample_weight: npt.ArrayLike | None = None,
) -> FloatArray:
    """q̂[cell, action]: cell-action means shrunk to the action mean, shrunk to the global mean."""
    c = np.asarray(cells, dtype=np.int64)
    a = np.asarray(actions, dtype=np.int64)
    r = np.asarray(rewards, dtype=np.float64)
    sw = np.ones_like(r) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = float(sw.sum())
    g = float((sw * r).sum() / total) if total > 0 else 0.0
    n_a = np.bincount(a, weights=sw, minlength=n_actions)
    s_a = np.bincount(a, weights=sw * r, minlength=n_actions)
    m_a = (s_a + shrinkage * g) / (n_a + shrinkage)
    flat = c * n_actions + a
    size = n_cells * n_actions
    n_ca = np.bincount(flat, weights=sw, minlength=size).reshape(n_cells, n_actions)
    s_ca = np.bincount(flat, weights=sw * r, minlength=size).reshape(n_cells, n_actions)
    q: FloatArray = (s_ca + shrinkage * m_a[None, :]) / (n_ca + shrinkage)
    return q


def _interval(samples: Sequence[float] | FloatArray, alpha: float) -> tuple[float | None, float | None]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None, None
    lo, hi = np.percentile(s, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def cluster_ids(groups: Sequence[Any]) -> IntArray:
    """Dense ids 0..G-1 for any hashable group keys, in order of first appearance."""
    ids: dict[Any, int] = {}
    return np.asarray([ids.setdefault(key, len(ids)) for key in groups], dtype=np.int64)


def cluster_bootstrap_means(values: npt.ArrayLike, groups: Sequence[Any], *, rng: np.random.Generator,
                            n_boot: int, chunk: int = 200) -> FloatArray:
    """Means of ``n_boot`` resamples that draw whole groups with replacement (a resample's size
    varies with the sizes of the groups it draws)."""
    x = np.asarray(values, dtype=np.float64)
    cl = cluster_ids(groups)
    if cl.shape != x.shape:
        raise ValueError("groups must have one entry per value")
    g = int(cl.max()) + 1 if cl.size else 0
    sums, sizes = np.bincount(cl, weights=x, minlength=g), np.bincount(cl, minlength=g).astype(np.float64)
    out = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, g, (b, g))
        out.append(sums[draws].sum(axis=1) / sizes[draws].sum(axis=1))
    return np.concatenate(out) if out else np.empty(0)


def on_policy_mean(
    rewards: npt.ArrayLike, *, seed: int = 0, n_boot: int = N_BOOT, alpha: float = ALPHA,
    groups: Sequence[Any] | None = None,
) -> Estimate:
    """The logging policy's own mean reward (plain mean) with a percentile bootstrap interval
    (resampling whole ``groups`` when given)."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return Estimate(method="on_policy", estimate=None, reason="no logged decisions with a reward")
    rng = np.random.default_rng(seed)
    if groups is not None:
        boots = cluster_bootstrap_means(r, groups, rng=rng, n_boot=n_boot)
    else:
        boots = np.concatenate([
            r[rng.integers(0, r.size, (min(200, n_boot - start), r.size))].mean(axis=1)
            for start in range(0, n_boot, 200)
        ])
    lo, hi = _interval(boots, alpha)
    return Estimate(method="on_policy", estimate=float(r.mean()), lower=lo, upper=hi)


def _as_target_matrix(target: npt.ArrayLike, n: int, n_actions: int) -> FloatArray:
    t = np.asarray(target)
    if t.ndim == 1:
        if t.shape[0] != n:
            raise ValueError(f"target has {t.shape[0]} actions for {n} decisions")
        pi = np.zeros((n, n_actions))
        pi[np.arange(n), t.astype(np.int64)] = 1.0
        return pi
    if t.shape != (n, n_actions):
        raise ValueError(f"target distribution has shape {t.shape}, expected {(n, n_actions)}")
    return np.asarray(t, dtype=np.float64)


class _Grouper:
    """Column sums of a (b, n) matrix by a fixed integer key per column, in O(b·n) (no dense one-hot)."""

    def __init__(self, keys: IntArray, size: int) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.uniq, self.starts = np.unique(keys[self.order], return_index=True)
        self.size = size

    def __call__(self, m: FloatArray) -> FloatArray:
        out = np.zeros((m.shape[0], self.size))
        if self.uniq.size:
            out[:, self.uniq] = np.add.reduceat(m[:, self.order], self.starts, axis=1)
        return out


class _Estimators:
    """IPS, SNIPS and DR for many resamples at once; a resample is a row of multiplicities ``M``.

    Every sum over a resample is ``M @ column`` or a grouped column sum of ``M`` (by action, or by
    (cell, action)), so refitting q̂ per resample costs O(n). DR is cross-fitted leave-one-out: the
    q̂ used in decision i's correction term, and for its logged action in its direct term, is
    refitted without i's copies (closed form for cell means). With an in-sample q̂ the correction
    would vanish exactly where q̂ is fitted to few points, leaving the model's bias uncorrected.
    """

    def __init__(self, pi: FloatArray, a: IntArray, p: FloatArray, r: FloatArray, cells: IntArray,
                 n_cells: int, q_fixed: FloatArray | None, shrinkage: float) -> None:
        n, k = pi.shape
        rows = np.arange(n)
        self.n, self.k, self.n_cells, self.lam = n, k, n_cells, shrinkage
        self.r = r
        self.pi_logged = pi[rows, a]
        self.w = self.pi_logged / p
        self.wr = self.w * r
        self.key = cells * k + a
        self.by_action = _Grouper(a, k)
        self.by_cell_action = _Grouper(self.key, n_cells * k)
        self.a = a
        # Σ_a π(a|x_i)·q̂(c_i, a): one grouping for a deterministic target, else one per action it uses.
        top = pi.argmax(axis=1)
        if np.all(pi[rows, top] == 1.0):
            self.target_groups = [(np.ones(n), _Grouper(cells * k + top, n_cells * k))]
        else:
            self.target_groups = [(pi[:, j], _Grouper(cells * k + j, n_cells * k))
                                  for j in range(k) if np.any(pi[:, j] > 0)]
        self.d_fixed: FloatArray | None = None
        if q_fixed is not None:
            self.d_fixed = (pi * q_fixed).sum(axis=1) + self.w * (r - q_fixed[rows, a])

    def __call__(self, m: FloatArray) -> FloatArray:
        """(b, 3): (IPS, SNIPS, DR) for each row of multiplicities ``m`` (b, n).

        A row's size ``Σm`` is ``n`` for a resample of decisions; a resample of clusters (whole
        issues) varies in size, so every mean divides by the row's own total."""
        b, lam = m.shape[0], self.lam
        n = m.sum(axis=1)
        m_wr = m @ self.wr
        wsum = m @ self.w
        with np.errstate(invalid="ignore", divide="ignore"):
            snips = np.where(wsum > 0, m_wr / np.where(wsum > 0, wsum, 1.0), np.nan)
        if self.d_fixed is not None:
            dr = (m @ self.d_fixed) / n
        else:
            mr = m * self.r[None, :]
            s_tot = mr.sum(axis=1)
            g = s_tot / n
            n_a, s_a = self.by_action(m), self.by_action(mr)
            m_a = (s_a + lam * g[:, None]) / (n_a + lam)
            n_ca, s_ca = self.by_cell_action(m), self.by_cell_action(mr)
            q = (s_ca.reshape(b, self.n_cells, self.k) + lam * m_a[:, None, :]) / (
                n_ca.reshape(b, self.n_cells, self.k) + lam)
            q = q.reshape(b, -1)
            direct = sum(((grp(m * col[None, :]) * q).sum(axis=1) for col, grp in self.target_groups), np.zeros(b))
            # Leave decision i's copies out of its own cell-action fit (and of its action's and the global mean).
            g_loo = (s_tot[:, None] - mr) / np.maximum(n[:, None] - m, 1.0)
            m_loo = (s_a[:, self.a] - mr + lam * g_loo) / (n_a[:, self.a] - m + lam)
            q_loo = (s_ca[:, self.key] - mr + lam * m_loo) / (n_ca[:, self.key] - m + lam)
            q_in = q[:, self.key]
            swap = (m * self.pi_logged[None, :] * (q_loo - q_in)).sum(axis=1)
            correction = m_wr - (m * self.w[None, :] * q_loo).sum(axis=1)
            dr = (direct + swap + correction) / n
        return np.stack([m_wr / n, snips, dr], axis=1)


def _bootstrap(est: _Estimators, *, seed: int, n_boot: int, groups: IntArray | None = None,
               chunk: int = 200) -> FloatArray:
    """(n_boot, 3) resampled estimates, seeded: multinomial resampling of decisions, or of whole
    clusters (``groups``: a cluster id 0..G-1 per decision) when decisions are not independent --
    the retries of one issue follow from its earlier outcomes."""
    n = est.n
    g = int(groups.max()) + 1 if groups is not None else n
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, 3))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, g, (b, g))
        flat = (np.arange(b)[:, None] * g + draws).ravel()
        m = np.bincount(flat, minlength=b * g).reshape(b, g).astype(np.float64)
        out[start:start + b] = est(m if groups is None else m[:, groups])
    return out


def evaluate(
    rewards: npt.ArrayLike,
    logged_actions: npt.ArrayLike,
    propensities: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    n_actions: int | None = None,
    logging: npt.ArrayLike | None = None,
    contexts: npt.ArrayLike | None = None,
    q_hat: npt.ArrayLike | None = None,
    groups: Sequence[Any] | None = None,
    target_name: str = "target",
    seed: int = 0,
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    shrinkage: float = SHRINKAGE,
    thresholds: SupportThresholds = DEFAULT_THRESHOLDS,
) -> OPEResult:
    """IPS, SNIPS and DR estimates of ``target``'s mean reward, or a refusal with its reason.

    ``logged_actions`` and a deterministic ``target`` are action indices (shape ``(n,)``); a
    stochastic target is a ``(n, n_actions)`` distribution. ``logging`` is the logging policy's
    full distribution ``(n, n_actions)`` when known (used for support only; the logged action's
    propensity always comes from ``propensities``). ``contexts`` are coarse context-cell ids for
    the default reward model; ``q_hat`` (``(n, n_actions)``) replaces it. ``groups`` (any
    hashable per decision, e.g. the issue id) makes the bootstrap resample whole groups.
    """
    r = np.asarray(rewards, dtype=np.float64)
    a = np.asarray(logged_actions, dtype=np.int64)
    p = np.asarray(propensities, dtype=np.float64)
    n = int(r.shape[0])
    if a.shape != (n,) or p.shape != (n,):
        raise ValueError("rewards, logged_actions and propensities must have the same length")
    t_arr = np.asarray(target)
    k_seen = [int(a.max()) + 1 if n else 0]
    if t_arr.ndim == 1 and n:
        k_seen.append(int(t_arr.max()) + 1)
    elif t_arr.ndim == 2:
        k_seen.append(int(t_arr.shape[1]))
    k = n_actions if n_actions is not None else max([*k_seen, 1])
    rm_name = "caller q̂" if q_hat is not None else f"cell-action mean, shrinkage {shrinkage:g}"

    def refuse(reason: str, diag: SupportDiagnostics) -> OPEResult:
        return OPEResult(
            target=target_name, n=n, refused=True, reason=reason,
            ips=Estimate(method="ips", estimate=None, reason=reason),
            snips=Estimate(method="snips", estimate=None, reason=reason),
            dr=Estimate(method="dr", estimate=None, reason=reason),
            diagnostics=diag, reward_model=rm_name, thresholds=thresholds,
        )

    if n == 0:
        empty = SupportDiagnostics(n=0, matches=0, support_fraction=0.0, unsupported_fraction=0.0,
                                   unsupported_mass=0.0, max_weight=0.0, ess=0.0, min_propensity=None)
        return refuse("no logged decisions with a reward", empty)
    if np.any(p <= 0) or np.any(p > 1) or not np.all(np.isfinite(p)):
        raise ValueError("propensities of logged actions must be in (0, 1]")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    if not shrinkage > 0:
        raise ValueError("shrinkage must be positive (it keeps leave-one-out fits defined)")

    pi = _as_target_matrix(target, n, k)
    if logging is None:
        lg = np.zeros((n, k))
        lg[np.arange(n), a] = p
        deterministic = p >= 1.0 - SUPPORT_EPS
        known = np.zeros((n, k), dtype=bool)
        known[np.arange(n), a] = True
        known[deterministic, :] = True  # a deterministic logger is known to give 0 elsewhere
        supported_action = (lg > SUPPORT_EPS) & known
    else:
        lg = np.asarray(logging, dtype=np.float64)
        if lg.shape != (n, k):
            raise ValueError(f"logging distribution has shape {lg.shape}, expected {(n, k)}")
        supported_action = lg > SUPPORT_EPS
        supported_action[np.arange(n), a] = True
    unsupported_mass_i = (pi * ~supported_action).sum(axis=1)
    supported = unsupported_mass_i <= SUPPORT_EPS
    w = pi[np.arange(n), a] / p
    matches = int(np.sum(pi[np.arange(n), a] > SUPPORT_EPS))
    diag = SupportDiagnostics(
        n=n,
        matches=matches,
        support_fraction=float(supported.mean()),
        unsupported_fraction=float(1.0 - supported.mean()),
        unsupported_mass=float(unsupported_mass_i.mean()),
        max_weight=float(w.max()),
        ess=effective_sample_size(w),
        min_propensity=float(p.min()),
    )
    if matches < thresholds.min_matches:
        return refuse(f"only {matches} decisions where the logger took an action the target takes "
                      f"(minimum {thresholds.min_matches})", diag)
    if diag.unsupported_fraction > thresholds.max_unsupported_fraction:
        return refuse(f"no support: in {diag.unsupported_fraction:.1%} of decisions the target takes an action "
                      f"the logger never tried with positive propensity "
                      f"(maximum {thresholds.max_unsupported_fraction:.1%})", diag)
    if diag.ess < thresholds.min_ess:
        return refuse(f"effective sample size {diag.ess:.1f} is below {thresholds.min_ess:g}", diag)

    if contexts is None:
        cells = np.zeros(n, dtype=np.int64)
    else:
        cells = np.asarray(contexts, dtype=np.int64)
        if cells.shape != (n,):
            raise ValueError("contexts must have one cell id per decision")
    n_cells = int(cells.max()) + 1
    q_fixed = None if q_hat is None else np.asarray(q_hat, dtype=np.float64)
    if q_fixed is not None and q_fixed.shape != (n, k):
        raise ValueError(f"q_hat has shape {q_fixed.shape}, expected {(n, k)}")

    est = _Estimators(pi, a, p, r, cells, n_cells, q_fixed, shrinkage)
    point = est(np.ones((1, n)))[0]
    cluster = None
    if groups is not None:
        cluster = cluster_ids(groups)
        if cluster.shape != (n,):
            raise ValueError("groups must have one entry per decision")
    boots = _bootstrap(est, seed=seed, n_boot=n_boot, groups=cluster)
    out: list[Estimate] = []
    for j, method in enumerate(("ips", "snips", "dr")):
        lo, hi = _interval(boots[:, j], alpha)
        out.append(Estimate(method=method, estimate=float(point[j]), lower=lo, upper=hi))
    return OPEResult(target=target_name, n=n, refused=False, reason=None, ips=out[0], snips=out[1], dr=out[2],
                     diagnostics=diag, reward_model=rm_name, thresholds=thresholds)


# -- from a decisions ledger -------------------------------------------------------------------


def clamped_action(proposal: Proposal) -> PlanAction | None:
    """A proposal's action after the clamp, rebuilt from its recorded violations (``applied`` per field)."""
    if proposal.action is None:
        return None
    values: dict[str, Any] = {f: getattr(proposal.action, f) for f in ACTION_FIELDS}
    for v in proposal.clamp:
        if v.field in values:
            values[v.field] = v.applied
    try:
        return PlanAction(**values)
    except ValueError:
        return proposal.action


def _confidence_fallback(violations: Sequence[Violation]) -> bool:
    return any(v.field == "confidence" and v.mode == "enforce" for v in violations)


def target_label(record: DecisionRecord, target: str) -> str | None:
    """The plan ``target`` would have applied for this decision, as an action label.

    ``heuristic``: its proposal after the clamp. ``candidate``: the candidate's clamped plan when
    it answered (status ok) above the confidence floor, else the heuristic's — i.e. the candidate
    as deployed, with its fallback. ``None`` when no candidate proposal was recorded.
    """
    heur = clamped_action(record.heuristic)
    if target == "heuristic":
        return heur.label() if heur is not None else None
    if target != "candidate":
        raise ValueError(f"unknown target {target!r} (heuristic | candidate)")
    c = record.candidate
    if c is None:
        return None
    act = clamped_action(c) if c.status == "ok" and not _confidence_fallback(c.clamp) else None
    if act is None:
        act = heur
    return act.label() if act is not None else None


def _label_fields(label: str) -> dict[str, str] | None:
    parts = label.split("/")
    if len(parts) != 4:
        return None
    return {"swarm_id": parts[0], "parallelism": parts[1], "max_run_minutes": parts[2], "max_candidates": parts[3]}


def logging_probability(record: DecisionRecord, label: str, explore_fields: Sequence[str] | None = None) -> float:
    """The probability that the logging policy applied plan ``label`` in this decision.

    Reconstructed from the record: the greedy plan (``exploration.greedy`` when explored, else the
    applied one) had ``1 − ε``, each of ``k`` alternatives ``ε / k`` -- or, with candidate-directed
    exploration (``exploration.candidate`` and ``candidate_share`` s), ``ε(1 − s) / k`` plus ``ε·s``
    for the candidate's plan. Alternatives are the
    clamp-allowed plans that keep the non-explored fields; targets here are clamp outputs, so a
    plan other than the greedy one is an alternative iff it matches the greedy plan on the fields
    exploration may not change (``exploration.fields`` in the record, else ``explore_fields``,
    else all fields are explorable).
    """
    applied = record.applied.action.label()
    if label == applied:
        return record.propensity
    exp = record.exploration or {}
    greedy = str(exp.get("greedy") or applied) if exp.get("explored") else applied
    eps = float(exp.get("epsilon") or 0.0)
    k = int(exp.get("alternatives") or 0)
    if eps <= 0 or k <= 0:
        return 1.0 if label == greedy else 0.0
    if label == greedy:
        return 1.0 - eps
    fields = exp.get("fields") or explore_fields or list(ACTION_FIELDS)
    fixed = [f for f in ACTION_FIELDS if f not in fields]
    g, t = _label_fields(greedy), _label_fields(label)
    if g is None or t is None:
        return 0.0
    if not all(g[f] == t[f] for f in fixed):
        return 0.0
    toward = exp.get("candidate")
    share = float(exp.get("candidate_share") or 0.0) if toward else 0.0
    return eps * (1.0 - share) / k + (eps * share if label == toward else 0.0)


@dataclass
class LoggedBatch:
    """Ledger decisions with a reward, as arrays over a shared action index."""

    decisions: list[JoinedDecision]
    labels: list[str]
    rewards: FloatArray
    logged: IntArray
    propensities: FloatArray
    cells: IntArray
    cell_names: list[str]
    targets: dict[str, IntArray] = field(default_factory=dict)
    logging: dict[str, FloatArray] = field(default_factory=dict)  # per target: (n, k) with the target's column set

    @property
    def n(self) -> int:
        return int(self.rewards.shape[0])


def build_batch(
    joined: Sequence[JoinedDecision],
    cell_of: Mapping[str, str] | None = None,
    *,
    targets: Sequence[str] = ("heuristic", "candidate"),
    explore_fields: Sequence[str] | None = None,
    reward: str = "utility",
) -> LoggedBatch:
    """Arrays for :func:`evaluate` from joined decisions that have a reward and every target's plan.

    ``cell_of`` maps decision_id → coarse context cell (e.g. ``"high/M"``); missing ones share a cell.
    ``reward`` names the outcome field: ``utility``, ``cost_usd`` or ``agent_minutes``
    (wall minutes × the applied plan's parallelism).
    """
    rows: list[tuple[JoinedDecision, float, dict[str, str]]] = []
    for j in joined:
        val = outcome_value(j, reward)
        if val is None:
            continue
        tl: dict[str, str] = {}
        for t in targets:
            lab = target_label(j.decision, t)
            if lab is None:
                break
            tl[t] = lab
        else:
            rows.append((j, val, tl))
    labels: list[str] = []
    index: dict[str, int] = {}

    def idx(label: str) -> int:
        if label not in index:
            index[label] = len(labels)
            labels.append(label)
        return index[label]

    cell_names: list[str] = []
    cell_index: dict[str, int] = {}
    logged, cells, props, rewards = [], [], [], []
    tgt: dict[str, list[int]] = {t: [] for t in targets}
    for j, val, tl in rows:
        logged.append(idx(j.decision.applied.action.label()))
        for t in targets:
            tgt[t].append(idx(tl[t]))
        name = (cell_of or {}).get(j.decision.decision_id, "unknown")
        if name not in cell_index:
            cell_index[name] = len(cell_names)
            cell_names.append(name)
        cells.append(cell_index[name])
        props.append(j.decision.propensity)
        rewards.append(val)
    n, k = len(rows), max(1, len(labels))
    batch = LoggedBatch(
        decisions=[r[0] for r in rows], labels=labels,
        rewards=np.asarray(rewards, dtype=np.float64), logged=np.asarray(logged, dtype=np.int64),
        propensities=np.asarray(props, dtype=np.float64), cells=np.asarray(cells, dtype=np.int64),
        cell_names=cell_names,
    )
    for t in targets:
        batch.targets[t] = np.asarray(tgt[t], dtype=np.int64)
        lg = np.zeros((n, k))
        for i, (j, _, tl) in enumerate(rows):
            lg[i, batch.logged[i]] = j.decision.propensity
            lg[i, batch.targets[t][i]] = logging_probability(j.decision, tl[t], explore_fields)
        batch.logging[t] = lg
    return batch


def outcome_value(j: JoinedDecision, reward: str) -> float | None:
    """One decision's realised ``utility``, ``cost_usd`` or ``agent_minutes`` (None when unknown)."""
    o = j.outcome
    if o is None:
        return None
    if reward == "utility":
        return o.utility
    if reward == "cost_usd":
        return o.cost_usd
    if reward == "agent_minutes":
        if o.duration_ms is None:
            return None
        return o.duration_ms / 60000.0 * j.decision.applied.action.parallelism
    raise ValueError(f"unknown reward {reward!r}")


class LedgerOPE(BaseModel):
    """OPE of the built-in targets over one population of ledger decisions."""

    model_config = ConfigDict(extra="forbid")

    population: str
    reward: str
    n: int
    logging: Estimate
    results: dict[str, OPEResult]


def ledger_ope(
    joined: Sequence[JoinedDecision],
    cell_of: Mapping[str, str] | None = None,
    *,
    targets: Sequence[str] = ("heuristic", "candidate"),
    explore_fields: Sequence[str] | None = None,
    reward: str = "utility",
    seed: int = 0,
    n_boot: int = N_BOOT,
    thresholds: SupportThresholds = DEFAULT_THRESHOLDS,
    cluster_by_issue: bool = True,
) -> LedgerOPE:
    """Evaluate ``targets`` on the decisions that have a reward and a plan for every target.

    Intervals resample whole issues (``cluster_by_issue``): an issue's retries depend on its
    earlier outcomes, so its decisions are not independent draws."""
    batch = build_batch(joined, cell_of, targets=targets, explore_fields=explore_fields, reward=reward)
    population = "decisions with a recorded " + reward + (
        " and a candidate proposal" if "candidate" in targets else "")
    results = {
        t: evaluate(batch.rewards, batch.logged, batch.propensities, batch.targets[t],
                    n_actions=max(1, len(batch.labels)), logging=batch.logging[t], contexts=batch.cells,
                    groups=[j.decision.issue_id for j in batch.decisions] if cluster_by_issue else None,
                    target_name=t, seed=seed, n_boot=n_boot, thresholds=thresholds)
        for t in targets
    }
    return LedgerOPE(population=population, reward=reward, n=batch.n,
                     logging=on_policy_mean(batch.rewards, seed=seed, n_boot=n_boot,
                                            groups=[j.decision.issue_id for j in batch.decisions]
                                            if cluster_by_issue else None), results=results)
