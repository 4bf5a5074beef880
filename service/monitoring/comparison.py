"""Two models compared on the same people: paired differences, with how sure they are.

Contract:
- `compare(truth, running, challenger, level=0.95)`: `truth` the outcomes (0 or 1), `running` and
  `challenger` the two models' probabilities for the same rows, in the same order. Returns
  {"pairs", "positives", "negatives", "level", "metrics", "verdict", "pairs_to_settle"}:
  - `metrics`: for "roc_auc", "log_loss" and "brier_score", each model's value, the
    difference (challenger minus running), its interval at `level`, and which way is better.
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
    z = NormalDist().inv_cdf(0.5 + level / 2)
    log_loss = mean_difference(log_losses(truth, running), log_losses(truth, challenger))
    brier_score = mean_difference((running - truth) ** 2, (challenger - truth) ** 2)
    metrics = {
        "roc_auc": metric(roc_auc_difference(truth, running, challenger), z, higher_is_better=True),
        "log_loss": metric(log_loss, z, higher_is_better=False),
        "brier_score": metric(brier_score, z, higher_is_better=False),
    }
    headline = metrics["roc_auc"]
    return {
        "pairs": int(truth.size),
        "positives": int(truth.sum()),
        "negatives": int(truth.size - truth.sum()),
        "level": level,
        "metrics": metrics,
        "verdict": VERDICTS[headline["better"]] if headline["better"] is not None else VERDICTS[0],
        "pairs_to_settle": pairs_to_settle(truth.size, headline),
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
        return None, None, None, None
    aucs, over_positives, over_negatives = [], [], []
    for probas in (running, challenger):
        auc, v10, v01 = structural_components(probas[positives], probas[negatives])
        aucs.append(auc)
        over_positives.append(v10)
        over_negatives.append(v01)
    difference = aucs[1] - aucs[0]
    variance = difference_variance(over_positives, m) + difference_variance(over_negatives, n)
    error = math.sqrt(max(variance, 0.0)) if m > 1 and n > 1 else None
    return aucs[0], aucs[1], difference, error


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
