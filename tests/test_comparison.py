"""The paired comparison of two models (service/monitoring/comparison.py): its figures are
scikit-learn's, DeLong's variance is the one computed pair by pair, and each interval covers the
true difference as often as it says, by simulation; from the running counts /compare reads
(compare_counts), the same figures within the bound it states, and the same coverage."""

import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from service.monitoring import pairs
from service.monitoring.comparison import CLIP, compare, compare_counts
from service.monitoring.periods import FINE_BINS

LEVEL = 0.95


def two_models(rng, rows, shift_running=1.0, shift_challenger=1.3, correlation=0.8, prevalence=0.4):
    """Outcomes and two models' probabilities: each model's score is its shift for a positive
    plus noise, the two noises correlated (the models see the same people). A model's ROC AUC is
    then Phi(shift / sqrt(2)) exactly."""
    truth = (rng.random(rows) < prevalence).astype(np.int8)
    shared = rng.standard_normal(rows)
    own = rng.standard_normal((2, rows))
    noise = math.sqrt(correlation) * shared + math.sqrt(1 - correlation) * own
    scores = np.array([shift_running, shift_challenger])[:, None] * truth + noise
    probas = 1 / (1 + np.exp(-(scores - np.array([[shift_running / 2], [shift_challenger / 2]]))))
    return truth, probas[0], probas[1]


def test_each_model_s_figures_are_scikit_learn_s():
    rng = np.random.default_rng(1)
    truth, running, challenger = two_models(rng, 500)
    running[:40] = running[40:80]  # ties, which ROC AUC counts as half
    found = compare(truth, running, challenger)["metrics"]
    for probas, side in ((running, "running"), (challenger, "challenger")):
        assert found["roc_auc"][side] == pytest.approx(roc_auc_score(truth, probas), abs=1e-12)
        assert found["log_loss"][side] == pytest.approx(log_loss(truth, probas), abs=1e-12)
        assert found["brier_score"][side] == pytest.approx(brier_score_loss(truth, probas), abs=1e-12)


def delong_by_pairs(truth, running, challenger):
    """DeLong's standard error of the AUC difference, comparing every positive with every negative."""
    components = []
    for probas in (running, challenger):
        positives, negatives = probas[truth == 1], probas[truth == 0]
        psi = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    variance = 0.0
    for side in (0, 1):
        differences = components[1][side] - components[0][side]
        variance += np.var(differences, ddof=1) / differences.size
    return math.sqrt(variance)


def test_the_auc_interval_is_delong_s_computed_pair_by_pair():
    rng = np.random.default_rng(2)
    truth, running, challenger = two_models(rng, 300)
    challenger = np.round(challenger, 2)  # many ties
    auc = compare(truth, running, challenger)["metrics"]["roc_auc"]
    half_width = (auc["interval"][1] - auc["interval"][0]) / 2
    expected = NormalDist().inv_cdf(0.975) * delong_by_pairs(truth, running, challenger)
    assert half_width == pytest.approx(expected)


def counts_of(truth, running, challenger):
    """The pairs.Counts the triggers keep for these labelled pairs, counted here from the rows."""
    truth = np.asarray(truth)
    running, challenger = np.asarray(running, dtype=float), np.asarray(challenger, dtype=float)
    counts = pairs.Counts(scored=truth.size)
    fine = [
        np.clip(np.floor(probas * FINE_BINS).astype(int), 0, FINE_BINS - 1)
        for probas in (running, challenger)
    ]
    for outcome in (0, 1):
        mine = truth == outcome
        cells = (
            fine[0][mine] // (FINE_BINS // pairs.JOINT_BINS),
            fine[1][mine] // (FINE_BINS // pairs.JOINT_BINS),
        )
        np.add.at(counts.joint[outcome], cells, 1)
        for scorer in (0, 1):
            margins = counts.positives if outcome == 1 else counts.negatives
            np.add.at(margins[scorer], fine[scorer][mine] // (FINE_BINS // pairs.MARGIN_BINS), 1)

    def log_losses(probas):
        clipped = np.clip(probas, CLIP, 1 - CLIP)
        return -np.where(truth == 1, np.log(clipped), np.log(1 - clipped))

    log_loss_difference = log_losses(challenger) - log_losses(running)
    squared_error_difference = (challenger - truth) ** 2 - (running - truth) ** 2
    counts.sums = {
        "sum_running_log_loss": log_losses(running).sum(),
        "sum_log_loss_difference": log_loss_difference.sum(),
        "sum_log_loss_difference_squared": (log_loss_difference**2).sum(),
        "sum_running_squared_error": ((running - truth) ** 2).sum(),
        "sum_squared_error_difference": squared_error_difference.sum(),
        "sum_squared_error_difference_squared": (squared_error_difference**2).sum(),
    }
    return counts


def from_counts(truth, running, challenger, level=LEVEL):
    return compare_counts(counts_of(truth, running, challenger), level)


def test_the_counts_give_the_rows_figures_within_the_bound_they_state():
    """Log loss and Brier score as from the rows; each ROC AUC within its max_error of the
    rows' (bins of 1/1000), and DeLong's interval within a few percent of its width."""
    rng = np.random.default_rng(6)
    for rows, correlation in ((300, 0.8), (5000, 0.95), (20000, 0.5)):
        truth, running, challenger = two_models(rng, rows, correlation=correlation)
        exact, binned = compare(truth, running, challenger), from_counts(truth, running, challenger)
        assert (binned["pairs"], binned["positives"]) == (exact["pairs"], exact["positives"])
        for name in ("log_loss", "brier_score"):
            for figure in ("running", "challenger", "difference", "interval"):
                assert binned["metrics"][name][figure] == pytest.approx(
                    exact["metrics"][name][figure], abs=1e-9
                )
        auc, rows_auc = binned["metrics"]["roc_auc"], exact["metrics"]["roc_auc"]
        assert 0 < auc["max_error"] < 1e-3
        for side in ("running", "challenger"):
            assert abs(auc[side] - rows_auc[side]) <= auc["max_error"]
        width, rows_width = (found["interval"][1] - found["interval"][0] for found in (auc, rows_auc))
        assert width == pytest.approx(rows_width, rel=0.05)
        assert abs(auc["difference"] - rows_auc["difference"]) <= 2 * auc["max_error"]


def coverage(statistic, true_difference, repeats=1000, rows=300, method=compare):
    rng = np.random.default_rng(20261206)
    covered = 0
    for _ in range(repeats):
        low, high = method(*two_models(rng, rows), level=LEVEL)["metrics"][statistic]["interval"]
        covered += low <= true_difference <= high
    return covered / repeats


def true_loss_difference(statistic, rows=4_000_000):
    truth, running, challenger = two_models(np.random.default_rng(7), rows)
    if statistic == "log_loss":
        return log_loss(truth, challenger) - log_loss(truth, running)
    return brier_score_loss(truth, challenger) - brier_score_loss(truth, running)


@pytest.mark.parametrize("statistic", ["roc_auc", "log_loss", "brier_score"])
def test_each_interval_covers_the_true_difference_at_its_level(statistic):
    """1,000 samples of 300 rows: the share of intervals holding the true difference is 0.95
    within about two of its standard errors (0.007). Treating the two models' figures as
    independent, as putting them side by side does, would cover nearly always (their
    correlation is 0.8): the test tells the paired interval from that."""
    if statistic == "roc_auc":
        phi = NormalDist().cdf
        true_difference = phi(1.3 / math.sqrt(2)) - phi(1.0 / math.sqrt(2))
    else:
        true_difference = true_loss_difference(statistic)
    assert 0.935 <= coverage(statistic, true_difference) <= 0.965


def test_the_auc_interval_from_the_counts_covers_the_true_difference_at_its_level():
    """The same simulation through compare_counts(): the covariance of the two models' components
    taken over cells of both probas keeps the interval's coverage (its losses' intervals are the
    rows', above)."""
    phi = NormalDist().cdf
    true_difference = phi(1.3 / math.sqrt(2)) - phi(1.0 / math.sqrt(2))
    assert 0.935 <= coverage("roc_auc", true_difference, method=from_counts) <= 0.965


def test_a_clearly_better_challenger_is_better_and_the_running_model_then_worse():
    rng = np.random.default_rng(3)
    truth, running, challenger = two_models(rng, 3000, shift_challenger=2.0)
    assert compare(truth, running, challenger)["verdict"] == "the challenger is better"
    found = compare(truth, challenger, running)
    assert found["verdict"] == "the challenger is worse"
    assert found["pairs_to_settle"] is None
    assert found["metrics"]["log_loss"]["better"] == -1  # its log loss is higher: worse


def test_too_few_pairs_say_how_many_would_likely_settle_it():
    rng = np.random.default_rng(4)
    truth, running, challenger = two_models(rng, 60, shift_challenger=1.1)
    found = compare(truth, running, challenger)
    assert found["verdict"] == "not distinguishable yet"
    assert found["pairs_to_settle"] > 60
    # With that many pairs and the same difference, the interval would leave out 0.
    auc = found["metrics"]["roc_auc"]
    half_width = (auc["interval"][1] - auc["interval"][0]) / 2
    assert half_width * math.sqrt(60 / found["pairs_to_settle"]) <= abs(auc["difference"])


def test_identical_models_are_not_distinguishable_and_no_count_would_settle_it():
    rng = np.random.default_rng(5)
    truth, running, _ = two_models(rng, 200)
    found = compare(truth, running, running)
    assert found["verdict"] == "not distinguishable yet"
    assert found["metrics"]["roc_auc"]["difference"] == 0
    assert found["pairs_to_settle"] is None


@pytest.mark.parametrize("outcomes", [[1, 1, 1], [0, 0, 0], []])
@pytest.mark.parametrize("method", [compare, from_counts])
def test_without_both_outcomes_the_auc_is_undefined_and_nothing_is_settled(outcomes, method):
    probas = np.linspace(0.2, 0.8, len(outcomes))
    found = method(np.array(outcomes, dtype=int), probas, probas[::-1])
    assert found["metrics"]["roc_auc"] | {"higher_is_better": None} == dict.fromkeys(
        ["running", "challenger", "difference", "interval", "higher_is_better", "better", "max_error"]
    )
    assert found["verdict"] == "not distinguishable yet"
    assert found["pairs_to_settle"] is None
    assert found["pairs"] == len(outcomes)
