"""Shared readings of a run that several rules need: windows, label shares, task type."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..run import Run

#: research-notes §6: outcome rules wait W0 = max(50 steps, 2 % of steps) before judging
WARMUP_MIN_STEPS = 50
WARMUP_FRACTION = 0.02
#: ... and judge windows of W = max(100 steps, 10 % of steps)
WINDOW_MIN_STEPS = 100
WINDOW_FRACTION = 0.10
#: a window shorter than this (short runs) is not enough to call a run stuck
WINDOW_FLOOR_STEPS = 30

CLASS_LOSSES = frozenset({"cross_entropy", "nll", "bce_logits", "bce"})
REGRESSION_LOSSES = frozenset({"mse", "l1", "smooth_l1", "huber"})


@dataclass(frozen=True)
class Window:
    start: int  # first step in the window (inclusive)
    end: int  # last step in the window (inclusive)

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        return df[(df["step"] >= self.start) & (df["step"] <= self.end)]

    @property
    def steps(self) -> int:
        return self.end - self.start + 1


#: a loss "flat" must be known to within this relative change either way (95 % interval)
FLAT_BOUND = 0.05
#: a run called stuck must be known not to fall by this much across its window (95 % interval)
STUCK_FALL_BOUND = 0.1
#: ... measured to within this much (the 95 % interval's half-width): a wider interval is a
#: loss too noisy for its steps to say anything (batch size 1, a young run)
STUCK_PRECISION = 0.15


@dataclass(frozen=True)
class LossTrend:
    """How the loss moved across a window: its two halves compared, with a 95 % bound."""

    first: float  # mean loss of the window's first half
    second: float  # ... of its second half
    rel_decrease: float  # (first - second) / |first|
    rel_decrease_upper: float  # the same, at the upper end of its 95 % confidence interval
    rel_decrease_lower: float  # ... at the lower end

    @property
    def falling(self) -> bool:
        """The loss fell, beyond noise."""
        return self.rel_decrease_lower > 0

    @property
    def known_flat(self) -> bool:
        """The loss is known to move by less than ``FLAT_BOUND`` either way (the whole 95 %
        interval inside it): a rise beyond it is not flat, an interval wider is noise."""
        return -FLAT_BOUND < self.rel_decrease_lower and self.rel_decrease_upper < FLAT_BOUND

    @property
    def known_not_falling(self) -> bool:
        """The loss is known not to fall by ``STUCK_FALL_BOUND`` (95 %), measured precisely
        enough to tell (half-width under ``STUCK_PRECISION``). Unlike ``known_flat`` a rise
        counts: it is no progress either."""
        return self.rel_decrease_upper < STUCK_FALL_BOUND and self.rel_decrease_upper - self.rel_decrease < STUCK_PRECISION


def loss_trend(losses: pd.Series) -> LossTrend | None:
    """Compare the two halves of ``losses`` (one value per step, in order); None when there
    are fewer than 4 values. The bound is a normal interval of the difference of the halves'
    means: per-step losses of a batch of one scatter far more than of a batch of 100, so the
    same steps say less."""
    values = pd.to_numeric(losses, errors="coerce").dropna().to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 4:
        return None
    half = len(values) // 2
    a, b = values[:half], values[half:]
    first, second = float(a.mean()), float(b.mean())
    scale = abs(first) or 1.0
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    diff = first - second
    return LossTrend(first, second, diff / scale, (diff + 1.96 * se) / scale, (diff - 1.96 * se) / scale)


def warmup_steps(n_steps: int, warmup_min: int = WARMUP_MIN_STEPS) -> int:
    """Steps at the start of a run of ``n_steps`` that outcome rules do not judge."""
    return max(warmup_min, math.ceil(WARMUP_FRACTION * n_steps))


def judgement_window(n_steps: int, *, warmup_min: int = WARMUP_MIN_STEPS, window_min: int = WINDOW_MIN_STEPS) -> Window | None:
    """The last window of the run after warm-up, or None if the run is too short."""
    warmup = warmup_steps(n_steps, warmup_min)
    size = min(max(window_min, math.ceil(WINDOW_FRACTION * n_steps)), n_steps - warmup)
    if size < WINDOW_FLOOR_STEPS:
        return None
    return Window(n_steps - size, n_steps - 1)


def loss_kind(run: Run) -> str | None:
    """The loss kind most training steps used."""
    train = run.train_steps()
    if train.empty or "loss_kind" not in train:
        return None
    kinds = train["loss_kind"].dropna()
    return str(kinds.mode().iloc[0]) if not kinds.empty else None


def mixed_losses(steps: pd.DataFrame) -> bool:
    """Most of ``steps`` (train rows) computed losses of different kinds or class counts (a
    main and an auxiliary loss): their recorded loss is a mean of unlike losses, which no
    single reference (ln K, the label entropy, the targets' variance) describes."""
    if steps.empty or "loss_mixed" not in steps:
        return False
    return bool((pd.to_numeric(steps["loss_mixed"], errors="coerce").fillna(0) == 1).mean() > 0.5)


def detail_rows(run: Run) -> pd.DataFrame:
    """Training steps that carry loss details (output and target ranges)."""
    train = run.train_steps()
    if train.empty or "out_min" not in train:
        return pd.DataFrame()
    return train.dropna(subset=["out_min"])


def targets_are_labels(run: Run) -> bool:
    """Targets are class labels: a classification loss, or whole numbers under a regression loss."""
    kind = loss_kind(run)
    if kind in CLASS_LOSSES:
        return True
    if kind in REGRESSION_LOSSES:
        d = detail_rows(run)
        return not d.empty and "tgt_integral" in d and bool((d["tgt_integral"] == 1).all())
    return False


@dataclass(frozen=True)
class LabelStats:
    counts: np.ndarray  # label count per class
    pred_counts: np.ndarray
    #: the class id of each position (rows keep only the classes a step saw: a position is
    #: not a class id once a class was never seen)
    classes: np.ndarray | None = None

    def class_at(self, i: int) -> int:
        return int(self.classes[i]) if self.classes is not None else int(i)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    @property
    def shares(self) -> np.ndarray:
        return self.counts / max(self.total, 1.0)

    @property
    def pred_shares(self) -> np.ndarray:
        return self.pred_counts / max(float(self.pred_counts.sum()), 1.0)

    @property
    def n_classes(self) -> int:
        """Classes that occur as labels (at least 2: a binary task with one class seen is still binary)."""
        return max(2, int((self.counts > 0).sum()))

    @property
    def majority(self) -> tuple[int, float]:
        """(class id, its share of the labels)."""
        i = int(np.argmax(self.counts))
        return self.class_at(i), float(self.shares[i])

    @property
    def entropy(self) -> float:
        """Label entropy in nats: the loss of the best input-independent predictor."""
        p = self.shares[self.shares > 0]
        return float(-(p * np.log(p)).sum())


def label_stats(run: Run, window: Window | None = None, mode: str = "train") -> LabelStats | None:
    pred = run["predictions"]
    if pred.empty:
        return None
    pred = pred[pred["mode"] == mode]
    if window is not None:
        pred = window.select(pred)
    if pred.empty:
        return None
    by_cls = pred.groupby("cls")[["n_label", "n_pred"]].sum().sort_index()
    return LabelStats(counts=by_cls["n_label"].to_numpy(float), pred_counts=by_cls["n_pred"].to_numpy(float),
                      classes=by_cls.index.to_numpy())


def target_moments(run: Run, window: "Window | None" = None) -> tuple[float, float] | None:
    """(mean, variance) of the targets over the steps with loss details (in ``window``)."""
    d = detail_rows(run)
    if window is not None and not d.empty:
        d = window.select(d)
    if d.empty or "tgt_n" not in d:
        return None
    n, s, ss = d["tgt_n"].sum(), d["tgt_sum"].sum(), d["tgt_sqsum"].sum()
    if n <= 0:
        return None
    mean = s / n
    return float(mean), float(max(ss / n - mean * mean, 0.0))


#: loss kind -> the column holding its input-independent predictor's loss x elements
SPREAD_COLUMNS = {"mse": "tgt_spread_sq", "l1": "tgt_spread_abs"}


def _spread_rows(d: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, pd.Series, pd.Series] | None:
    """The rows of ``d`` that carry the targets' spread for ``kind``, with its sum and the
    elements it is over."""
    column = SPREAD_COLUMNS[kind]
    if d.empty or column not in d or "tgt_elems" not in d:
        return None
    d = d.dropna(subset=[column])
    return d, pd.to_numeric(d[column], errors="coerce"), pd.to_numeric(d["tgt_elems"], errors="coerce")


def target_spread(run: Run, kind: str, window: "Window | None" = None) -> tuple[float, float] | None:
    """(per-element spread of the targets around each channel's centre, the run's mean loss
    on the same steps): the mean predictor's MSE (``kind`` "mse") or the median predictor's
    L1 ("l1"), over the steps with loss details (in ``window``) that carry it; None for
    records without it."""
    d = detail_rows(run)
    if window is not None and not d.empty:
        d = window.select(d)
    rows = _spread_rows(d, kind)
    if rows is None:
        return None
    d, total, n = rows
    losses = finite(d["loss"])
    if n.sum() <= 0 or losses.empty:
        return None
    return float(total.sum() / n.sum()), float(losses.mean())


@dataclass(frozen=True)
class Reference:
    """What an input-independent predictor reaches, and the run's loss on the same steps."""

    loss: float  # the reference loss
    kind: str  # "label entropy" or "target variance"
    run_loss: float  # the run's mean loss over the steps the reference was read on


def reference_loss(run: Run, window: "Window | None" = None) -> Reference | None:
    """The loss of the best input-independent predictor for this run's loss, read on
    ``window`` (the whole run when None), beside the run's loss on the same steps.

    The loss decides the reference, not the targets: a classification loss is compared
    with the label entropy; MSE with the variance of the targets (0/1 labels under MSE
    included: the mean predictor's MSE is their variance, and their entropy is not an MSE),
    within each output channel when there are several; L1 with their mean absolute
    deviation from each channel's median.
    The variance is read on the steps that carry target details, and the run's loss on
    those same steps, so a changing target distribution cannot fake a gap. None for other
    losses, when nothing was recorded, or when most steps mix unlike losses."""
    train = run.train_steps()
    if train.empty or "loss" not in train:
        return None
    if window is not None:
        train = window.select(train)
    if mixed_losses(train):
        return None
    kind = loss_kind(run)
    if kind in CLASS_LOSSES:
        labels = label_stats(run, window)
        if labels is None or labels.total <= 0:
            labels = label_stats(run)
        losses = finite(train["loss"])
        if labels is None or labels.total <= 0 or losses.empty:
            return None
        return Reference(labels.entropy, "label entropy", float(losses.mean()))
    if kind in ("mse", "l1"):
        detail = detail_rows(run)
        if window is not None and not detail.empty:
            detail = window.select(detail)
        losses = finite(detail["loss"]) if not detail.empty else pd.Series(dtype=float)
        if losses.empty:
            return None
        spread = target_spread(run, kind, window)
        if kind == "l1":
            return Reference(spread[0], "target mean absolute deviation", spread[1]) if spread is not None else None
        moments = target_moments(run, window)
        if moments is None:
            return None
        # several outputs: each predicted at its own mean (the pooled variance would count
        # the differences between the channels' means as something to learn)
        if spread is not None and spread[0] < moments[1]:
            return Reference(spread[0], "target variance", spread[1])
        return Reference(moments[1], "target variance", float(losses.mean()))
    return None


def constant_inputs(run: Run, min_calls: int = 3) -> dict[str, pd.DataFrame]:
    """Module -> its input rows, for every module whose input never varied: standard
    deviation 0 (or every feature constant over batch and time of a sequence: one fixed
    vector, which training may move between steps) in each of at least ``min_calls`` sampled
    calls, and, for the former, the same mean in all of
    them (a loop stepping a batch of one, one value per call, has std 0 in every call while
    its values change); recurrent modules' inputs in the calls that trained (all calls where
    none is known to), or the model's own training input when there is no torch recurrent
    module (a hand-written cell)."""
    r = run["rnn_inputs"]
    if r.empty:
        r = run["inputs"]
        r = r[r["mode"] == "train"] if not r.empty and "mode" in r else r
    elif "backward" in r:
        # the calls that trained: an evaluation without the training path's transform (an
        # augmentation callback that blanks every training batch) sees the real data
        trained = r[pd.to_numeric(r["backward"], errors="coerce").fillna(1) != 0]
        r = trained if not trained.empty else r
    if r.empty or "std" not in r:
        return {}
    level = "mean" if "mean" in r else "abs_mean"  # records before the signed mean: |x|
    out = {}
    for module, rows in r.groupby("module", sort=False):
        if len(rows) < min_calls:
            continue
        fixed = _one_fixed_vector(rows)
        if not ((pd.to_numeric(rows["std"], errors="coerce") == 0).all() or fixed):
            continue
        # one value per call may still change between calls (a batch of one stepped one
        # element at a time); a whole sequence that is one vector throughout says nothing of
        # its data, even where training moves that vector between steps
        values = pd.to_numeric(rows[level], errors="coerce") if level in rows else pd.Series([0.0])
        if not fixed and (values.isna().any() or values.nunique() > 1):
            continue
        out[str(module)] = rows
    return out


def _one_fixed_vector(rows: pd.DataFrame) -> bool:
    """Every feature constant over batch and time in every call (a per-channel constant, as a
    convolution of a constant gives): one fixed vector, whatever differs between features.
    Read only on sequences (more than one row per call; a batch of one stepped one element
    at a time has a single row, whose per-feature spread is 0 by construction)."""
    if "feature_std_max" not in rows or "seq_len" not in rows:
        return False
    spread = pd.to_numeric(rows["feature_std_max"], errors="coerce")
    steps = pd.to_numeric(rows["seq_len"], errors="coerce")
    return bool(((spread == 0) & (steps > 1)).all())


def first_and_last_tenth(run: Run) -> tuple[float, float] | None:
    """The mean finite training loss over the run's first tenth and over its last; None
    under 20 finite losses."""
    loss = finite(run.train_steps().get("loss", pd.Series(dtype=float)))
    if len(loss) < 20:
        return None
    k = max(1, len(loss) // 10)
    return float(loss.iloc[:k].mean()), float(loss.iloc[-k:].mean())


def finite(series: pd.Series) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce")
    return values[np.isfinite(values)]


def fmt(x: float, digits: int = 3) -> str:
    """A number as people read it in a sentence."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return str(x)
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:.{digits}g}"


#: a training loss this many times its running minimum (and its start) has blown up
BLOW_UP_FACTOR = 1e3


def blow_up_step(run: Run, factor: float = BLOW_UP_FACTOR) -> int | None:
    """The first training step whose loss is not finite, or ``factor`` times both its running
    minimum and its starting value; None when the loss never blew up.

    Statistics taken from then on describe the blow-up (gradients of saturated units are
    exactly zero, fed-back outputs are huge), not the model or the data: rules that judge
    such statistics read only the steps before it."""
    train = run.train_steps()
    if train.empty or "loss" not in train:
        return None
    loss = pd.to_numeric(train["loss"], errors="coerce").to_numpy(dtype=float)
    steps = train["step"].to_numpy()
    finite_seen = np.isfinite(loss)
    if not finite_seen.any():
        return int(steps[0]) if len(steps) else None
    start = abs(float(loss[finite_seen][0])) or 1e-12
    run_min = np.fmin.accumulate(np.where(finite_seen, loss, np.nan))
    bad = ~finite_seen | ((loss > factor * np.maximum(np.abs(run_min), 1e-12)) & (loss > factor * start))
    hits = np.nonzero(bad)[0]
    return int(steps[hits[0]]) if len(hits) else None


def before_blow_up(run: Run, df: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``df`` (with a ``step`` column) taken before the loss blew up."""
    step = blow_up_step(run)
    return df if step is None or df.empty else df[df["step"] < step]


def first_half(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the first half of the run's sampled steps: saturation and growth are judged at
    the start (a good run may saturate its forget gates later, by learning)."""
    return df[df["step"] <= df["step"].max() // 2] if not df.empty else df


def second_half(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the second half: what the gradient profile looks like once training had its chance."""
    return df[df["step"] >= df["step"].max() // 2] if not df.empty else df


def mean_profile(series: pd.Series) -> np.ndarray | None:
    """Element-wise mean of the list-valued rows (per-t profiles) of the most common length."""
    if series.empty:
        return None
    lengths = series.map(len)
    t = int(lengths.mode().iloc[0])
    return np.mean([np.asarray(v, float) for v in series[lengths == t]], axis=0)


def finite_prefix(profile: np.ndarray | None) -> np.ndarray | None:
    """A per-t profile up to its first NaN/Inf (a sequence that overflowed part way)."""
    if profile is None:
        return None
    bad = ~np.isfinite(profile)
    return profile[: int(np.argmax(bad))] if bad.any() else profile


def _reached(profile: list[float] | np.ndarray, eps: float) -> np.ndarray:
    """Time steps whose gradient is at least ``eps`` x the profile's peak (none without one)."""
    g = np.asarray(profile, dtype=float)
    if g.size == 0 or not np.isfinite(g).any() or np.nanmax(g) <= 0:
        return np.zeros(0, dtype=int)
    return np.nonzero(g >= eps * np.nanmax(g))[0]


def horizon(profile: list[float] | np.ndarray, eps: float) -> int:
    """Steps back from the last time step over which the gradient stays >= eps x its peak:
    T - (first t with g(t) >= eps * max g). Pascanu et al. 2013's decay, Madsen 2019's
    connectivity, applied to the loss."""
    above = _reached(profile, eps)
    return int(len(profile) - above[0]) if above.size else 0


def last_reached(profile: list[float] | np.ndarray, eps: float) -> int | None:
    """The last time step whose gradient is at least ``eps`` x the peak, when steps after it
    get less (an answer read before the sequence ends); None when the last step is reached."""
    above = _reached(profile, eps)
    return int(above[-1]) if above.size and above[-1] < len(profile) - 1 else None


#: detail steps a paired comparison of the loss with the reference needs
MIN_PAIRED_STEPS = 5


def _paired_ratio(run: Run, w: Window, kind: str) -> tuple[float, float, int] | None:
    """(mean, lower 95 % bound, steps) of the loss over the input-independent predictor's
    loss on the same batch, over the class-count steps of ``w`` (every 4th): batch-to-batch
    noise that hides a trend cancels in the ratio."""
    window = w.select(run.train_steps())
    rows = _spread_rows(window, kind) if not window.empty and not mixed_losses(window) else None
    if rows is None:
        return None
    d, total, n = rows
    ref = total / n
    ratio = (pd.to_numeric(d["loss"], errors="coerce") / ref.where(ref > 0)).replace([np.inf, -np.inf], np.nan).dropna()
    if len(ratio) < MIN_PAIRED_STEPS:
        return None
    mean = float(ratio.mean())
    half = 1.96 * float(ratio.std(ddof=1)) / math.sqrt(len(ratio))
    return mean, mean - half, int(len(ratio))


def stuck_evidence(run: Run, w: Window, *, acc_floor_tol: float = 0.02, loss_fraction: float = 0.9,
                   min_rel_decrease: float = 0.01) -> dict | None:
    """Evidence that window ``w`` sits at the input-independent baseline, or None (the
    reading of ``stuck-at-chance``, which other rules use as evidence that nothing is learned).

    Class labels: the window is widened back (never into the warm-up) until it counts at
    least ``MIN_JUDGED_TARGETS`` targets; a run that has not seen that many since its
    warm-up is too young to call stuck. A batch of one, counted every 4th step, puts 25
    targets in a 100-step window, where accuracy 0.4 against a baseline of 0.2 is noise."""
    labelled = targets_are_labels(run)
    if labelled:
        widened = _window_with_targets(run, w)
        if widened is None:
            return None
        w = widened
    train = w.select(run.train_steps())
    losses = finite(train["loss"]) if "loss" in train else pd.Series(dtype=float)
    if len(losses) < max(10, w.steps // 2):
        return None
    mean_loss = float(losses.mean())
    trend = loss_trend(losses)
    # stuck needs evidence that the loss is not falling, not only no evidence that it falls:
    # a young or noisy run (batch size 1) is too early to tell. A loss at the reference with
    # batch-to-batch noise (a 93/7 batch of 28 holds 0-5 positives) is not known flat within
    # 5 %, but is known not to fall
    kind = loss_kind(run)
    if trend is None or trend.rel_decrease >= min_rel_decrease or not trend.known_not_falling:
        # a regression loss too noisy between batches for its trend to say anything can
        # still be compared, batch by batch, with what the mean (median) predictor scores on
        # those same batches: at it throughout the window, and not known to fall, is stuck
        paired = _paired_ratio(run, w, kind) if not labelled and kind in ("mse", "l1") else None
        if trend is None or trend.falling or paired is None or paired[1] < loss_fraction:
            return None
        ev_paired = {"paired_ratio": paired[0], "paired_ratio_lower": paired[1], "paired_steps": paired[2]}
    else:
        ev_paired = {}
    ev: dict = {"window": [w.start, w.end], "loss": mean_loss, "loss_relative_decrease": trend.rel_decrease,
                "loss_relative_decrease_upper": trend.rel_decrease_upper}
    if labelled:
        labels = label_stats(run, w)
        if labels is None or labels.total <= 0:
            return None
        correct, total = train["correct"].sum(), train["total"].sum()
        acc = float(correct / total) if total else float("nan")
        k = labels.n_classes
        _, baseline = labels.majority
        tol = max(acc_floor_tol, 3 * math.sqrt(baseline * (1 - baseline) / max(total, 1.0)))
        # the window's majority share overstates a balanced task's by its sampling noise
        balanced = abs(baseline - 1.0 / k) <= max(0.02, tol)
        # an input-independent predictor scores anywhere between the rarest and the most
        # frequent class's share (it may spread its guesses): below the rarest is not learning
        # either (a class seen in the labels counts, one never seen does not)
        seen = labels.shares[labels.counts > 0]
        least = float(seen.min()) if len(seen) >= k else 0.0
        if not (least - tol <= acc <= baseline + tol):
            return None
        ref = reference_loss(run, w)
        ref_loss, ref_name = (ref.loss, ref.kind) if ref is not None else (float("nan"), "")
        if ref is not None and ref.run_loss < loss_fraction * ref.loss:
            return None
        ev.update(
            accuracy=acc,
            baseline=baseline,
            baseline_kind="chance 1/K" if balanced else "majority-class share",
            classes=k,
            tolerance=tol,
            reference_loss=ref_loss,
            reference_loss_kind=ref_name,
        )
        return ev
    ref = reference_loss(run, w) if kind in ("mse", "l1") else None
    if ref is None or ref.loss <= 0 or ref.run_loss < loss_fraction * ref.loss:
        return None
    ev.update(ev_paired)
    ev.update(reference_loss=ref.loss, baseline=None, loss_kind=kind,
              reference_loss_kind="target variance (mean predictor)" if kind == "mse" else
              "target mean absolute deviation (median predictor)")
    return ev


#: accuracy is judged against its baseline over at least this many counted targets
MIN_JUDGED_TARGETS = 200


def _window_with_targets(run: Run, w: Window) -> Window | None:
    """``w``, or ``w`` started earlier (not before the warm-up) so that it counts at least
    ``MIN_JUDGED_TARGETS`` targets; None when even that is not enough."""
    train = run.train_steps()
    if "total" not in train:
        return w
    totals = pd.to_numeric(train["total"], errors="coerce").fillna(0)
    if float(totals[(train["step"] >= w.start) & (train["step"] <= w.end)].sum()) >= MIN_JUDGED_TARGETS:
        return w
    eligible = (train["step"] >= warmup_steps(len(train))) & (train["step"] <= w.end)
    steps, counted = train["step"][eligible].to_numpy()[::-1], totals[eligible].to_numpy()[::-1].cumsum()
    enough = np.nonzero(counted >= MIN_JUDGED_TARGETS)[0]
    return Window(int(steps[enough[0]]), w.end) if len(enough) else None


def learns_nothing(run: Run, *, loss_fraction: float = 0.9, max_fall: float = 0.1) -> dict | None:
    """Evidence that the run has learned nothing from its inputs, read from the loss alone
    (recorded every step, so a batch of one has it where accuracy is sampled too sparsely):
    after the warm-up and a full judgement window, the last window's loss is still at least
    ``loss_fraction`` of what an input-independent predictor reaches (label entropy; target
    variance under MSE), and at 95 % confidence the loss does not fall by ``max_fall``
    between the two halves of the steps after the warm-up. None when it learns, or when
    that cannot be told (no loss, no reference, too few steps)."""
    train = run.train_steps()
    if train.empty or "loss" not in train:
        return None
    w = judgement_window(len(train))
    post = train[train["step"] >= warmup_steps(len(train))]
    if w is None or len(post) < 2 * WINDOW_MIN_STEPS:
        return None
    trend = loss_trend(post["loss"])
    if trend is None or trend.rel_decrease_upper >= max_fall:
        return None
    ref = reference_loss(run, w)
    if ref is None or not (math.isfinite(ref.loss) and ref.loss > 0 and ref.run_loss >= loss_fraction * ref.loss):
        return None
    return {"window": [w.start, w.end], "loss": ref.run_loss, "reference_loss": ref.loss, "reference_loss_kind": ref.kind,
            "loss_relative_decrease_upper": trend.rel_decrease_upper}
