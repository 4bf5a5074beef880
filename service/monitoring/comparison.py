"""Two models compared on the same people: paired differences, with how sure they are.

Contract:
- `compare(truth, running, challenger, level=0.95)`: `truth` the outcomes (0 or 1), `running` and
  `challenger` the two models' probabilities for the same rows, in the same order. Returns
  {"pairs", "positives", "negatives", "level", "metrics", "verdict", "pairs_to_settle"}:
  - `metrics`: for "roc_auc", "log_loss" and "brier_score", each model's value, the
    difference (challenger minus running), its interval at `level`, and which way is better;
    for ROC AUC also `max_error`, the most either model's figure can be from the rows' (0 here).
    Any field that is undefined is None: ROC AUC needs both outcomes, every interval two pairs.
  - `verdict`, on ROC AUC: "the challenger is better" or "worse" when the interval leaves out
    0, else "not distinguishable yet".
  - `pairs_to_settle`: while not distinguishable, roughly how many labelled pairs in all would
    make an interval this wide around this difference leave out 0 (an interval narrows as one
    over the square root of the pairs); None once settled, or when the difference is 0.
- ROC AUC's interval is DeLong's (DeLong, DeLong and Clarke-Pearson, 1988, in the fast midrank
  form of Sun and Xu, 2014): the two AUCs are correlated because they rank the same people, and
  the method's variance of their difference accounts for it. Log loss and Brier score are means
  of per-row losses, so their difference is the mean of per-row differences, with a normal
  interval. tests/test_comparison.py checks each interval's coverage by simulation.
- `compare_counts(counts, level=0.95)`: the same from pairs.py's running counts, what /compare
  reads (its cost doesn't grow with the rows): log loss and Brier score as from the rows; ROC
  AUC from each model's probas in bins of 1/1000 (`max_error` bounds how far that is from the
  rows' figure), and the covariance in DeLong's variance from cells of 1/100 of both probas.
- Log loss clips probabilities to [1e-15, 1 - 1e-15], as scikit-learn's `log_loss` does.
"""

import math
from statistics import NormalDist

import numpy as np
from scipy.stats import rankdata

CLIP = 1e-15
VERDICTS = {1: "the challenger is better", -1: "the challenger is worse", 0: "not distinguishable yet"}


def compare(truth, running, challenger, level=0.95):
    truth = np.asarray(truth, dtype=np.int8)
    running = np.asarray(running, dtype=np.float64)
    challenger = np.asarray(challenger, dtype=np.float64)
    estimates = {
        "roc_auc": roc_auc_difference(truth, running, challenger),
        "log_loss": mean_difference(log_losses(truth, running), log_losses(truth, challenger)),
        "brier_score": mean_difference((running - truth) ** 2, (challenger - truth) ** 2),
    }
    return summary(int(truth.sum()), int(truth.size - truth.sum()), estimates, level)


def compare_counts(counts, level=0.95):
    """compare() from the running counts of pairs.py (a `pairs.Counts`): log loss and Brier score
    as over the rows; ROC AUC over each model's probas in MARGIN_BINS bins, each within its
    `max_error` of the rows' figure; its interval DeLong's, with the covariance of the two models'
    components taken over JOINT_BINS x JOINT_BINS cells of both probas."""
    positives, negatives = int(counts.positives[0].sum()), int(counts.negatives[0].sum())
    pairs = positives + negatives
    estimates = {
        "roc_auc": binned_roc_auc_difference(counts),
        "log_loss": summed_difference(pairs, *(counts.sums[name] for name in LOG_LOSS_SUMS)),
        "brier_score": summed_difference(pairs, *(counts.sums[name] for name in SQUARED_ERROR_SUMS)),
    }
    return summary(positives, negatives, estimates, level)


def summary(positives, negatives, estimates, level):
    z = NormalDist().inv_cdf(0.5 + level / 2)
    metrics = {
        name: metric(estimate[:4], z, higher_is_better=name == "roc_auc")
        for name, estimate in estimates.items()
    }
    metrics["roc_auc"]["max_error"] = estimates["roc_auc"][4]  # how far from the rows' exact figure
    headline = metrics["roc_auc"]
    return {
        "pairs": positives + negatives,
        "positives": positives,
        "negatives": negatives,
        "level": level,
        "metrics": metrics,
        "verdict": VERDICTS[headline["better"]] if headline["better"] is not None else VERDICTS[0],
        "pairs_to_settle": pairs_to_settle(positives + negatives, headline),
    }


def metric(estimate, z, higher_is_better):
    """One metric's figures from (running, challenger, difference, standard error of it)."""
    running, challenger, difference, error = estimate
    interval = None if error is None else [difference - z * error, difference + z * error]
    return {
        "running": running,
        "challenger": challenger,
        "difference": difference,
        "interval": interval,
        "higher_is_better": higher_is_better,
        "better": better(interval, higher_is_better),
    }


def better(interval, higher_is_better):
    """1 if the interval says the challenger is better, -1 worse, 0 neither, None no interval."""
    if interval is None:
        return None
    sign = 1 if higher_is_better else -1
    if interval[0] > 0:
        return sign
    if interval[1] < 0:
        return -sign
    return 0


def pairs_to_settle(pairs, headline):
    if headline["better"] != 0 or not headline["difference"]:
        return None
    low, high = headline["interval"]
    half_width = (high - low) / 2
    return math.ceil(pairs * (half_width / abs(headline["difference"])) ** 2)


def log_losses(truth, probas):
    clipped = np.clip(probas, CLIP, 1 - CLIP)
    return -np.where(truth == 1, np.log(clipped), np.log1p(-clipped))


def mean_difference(running_losses, challenger_losses):
    differences = challenger_losses - running_losses
    n = differences.size
    if n == 0:
        return None, None, None, None
    error = float(np.std(differences, ddof=1) / math.sqrt(n)) if n > 1 else None
    return float(running_losses.mean()), float(challenger_losses.mean()), float(differences.mean()), error


def roc_auc_difference(truth, running, challenger):
    """(AUC of running, of challenger, their difference, its DeLong standard error)."""
    positives, negatives = truth == 1, truth == 0
    m, n = int(positives.sum()), int(negatives.sum())
    if m == 0 or n == 0:
        return None, None, None, None, None
    aucs, over_positives, over_negatives = [], [], []
    for probas in (running, challenger):
        auc, v10, v01 = structural_components(probas[positives], probas[negatives])
        aucs.append(auc)
        over_positives.append(v10)
        over_negatives.append(v01)
    difference = aucs[1] - aucs[0]
    variance = difference_variance(over_positives, m) + difference_variance(over_negatives, n)
    error = math.sqrt(max(variance, 0.0)) if m > 1 and n > 1 else None
    return aucs[0], aucs[1], difference, error, 0.0


def structural_components(positive_probas, negative_probas):
    """AUC and DeLong's components: for each positive, the share of negatives it outranks (ties
    half); for each negative, the share of positives that outrank it. From midranks: sorting
    once, instead of comparing every positive with every negative."""
    m, n = positive_probas.size, negative_probas.size
    overall = rankdata(np.concatenate([positive_probas, negative_probas]))
    v10 = (overall[:m] - rankdata(positive_probas)) / n
    v01 = 1.0 - (overall[m:] - rankdata(negative_probas)) / m
    return float(v10.mean()), v10, v01


def difference_variance(components, count):
    """Var(challenger's component mean - running's) over one class: (S_rr + S_cc - 2 S_rc) / count."""
    if count < 2:
        return 0.0
    differences = components[1] - components[0]
    return float(np.var(differences, ddof=1)) / count


LOG_LOSS_SUMS = ("sum_running_log_loss", "sum_log_loss_difference", "sum_log_loss_difference_squared")
SQUARED_ERROR_SUMS = (
    "sum_running_squared_error", "sum_squared_error_difference", "sum_squared_error_difference_squared",
)  # fmt: skip


def summed_difference(n, running_sum, difference_sum, squared_difference_sum):
    """mean_difference() from the sums over the rows of the running model's loss, of the
    differences and of their squares."""
    if n == 0:
        return None, None, None, None
    difference = difference_sum / n
    error = None
    if n > 1:
        variance = max(squared_difference_sum - n * difference**2, 0.0) / (n - 1)
        error = math.sqrt(variance / n)
    running = float(running_sum / n)
    return running, running + float(difference), float(difference), error


def binned_roc_auc_difference(counts):
    """(AUC of running, of challenger, their difference, its standard error, the most either AUC
    can be off) from the margins' bins; the cross term of DeLong's covariance from the joint cells,
    each model's components averaged over the pairs of a cell's bin."""
    m, n = int(counts.positives[0].sum()), int(counts.negatives[0].sum())
    if m == 0 or n == 0:
        return None, None, None, None, None
    models = [binned_components(counts.positives[scorer], counts.negatives[scorer]) for scorer in (0, 1)]
    (auc_r, v10_r, v01_r), (auc_c, v10_c, v01_c) = models
    group = counts.positives.shape[1] // counts.joint[1].shape[0]
    over_positives = binned_difference_variance(
        counts.positives, (v10_r, v10_c), (auc_r, auc_c), counts.joint[1], group, m
    )
    over_negatives = binned_difference_variance(
        counts.negatives, (v01_r, v01_c), (auc_r, auc_c), counts.joint[0], group, n
    )
    error = math.sqrt(max(over_positives + over_negatives, 0.0)) if m > 1 and n > 1 else None
    max_error = max(
        float((counts.positives[scorer] * counts.negatives[scorer]).sum()) / (2 * m * n) for scorer in (0, 1)
    )
    return auc_r, auc_c, auc_c - auc_r, error, max_error


def binned_components(positives, negatives):
    """AUC and DeLong's components per bin: a positive's share of negatives it outranks (those in
    lower bins, half of its own bin's), a negative's share of positives that outrank it."""
    m, n = positives.sum(), negatives.sum()
    v10 = (np.cumsum(negatives) - negatives / 2) / n
    v01 = (np.cumsum(positives[::-1])[::-1] - positives / 2) / m
    return float((positives * v10).sum() / m), v10, v01


def binned_difference_variance(weights, components, aucs, joint, group, count):
    """Var(challenger's component mean - running's) over one class, as difference_variance():
    (S_rr + S_cc - 2 S_rc) / count, where S_rc comes from the joint cells."""
    if count < 2:
        return 0.0
    (running, challenger), (auc_r, auc_c) = components, aucs
    own = [
        (float((weights[scorer] * component**2).sum()) - count * auc**2) / (count - 1)
        for scorer, component, auc in ((0, running, auc_r), (1, challenger, auc_c))
    ]
    cell_means = [
        coarse_means(weights[scorer], component, group)
        for scorer, component in ((0, running), (1, challenger))
    ]
    cross = (float(cell_means[0] @ joint @ cell_means[1]) - count * auc_r * auc_c) / (count - 1)
    return (own[0] + own[1] - 2 * cross) / count


def coarse_means(weights, component, group):
    """The component's mean over the pairs of each coarse bin (`group` margin bins each)."""
    totals = (weights * component).reshape(-1, group).sum(axis=1)
    pairs = weights.reshape(-1, group).sum(axis=1)
    return np.divide(totals, pairs, out=np.zeros_like(totals), where=pairs > 0)
