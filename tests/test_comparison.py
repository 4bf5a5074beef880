"""The paired comparison of two models (service/monitoring/comparison.py): its figures are
scikit-learn's, DeLong's variance is the one computed pair by pair, and each interval covers the
true difference as often as it says, by simulation."""

import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from service.monitoring.comparison import compare

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


def coverage(statistic, true_difference, repeats=1000, rows=300):
    rng = np.random.default_rng(20261206)
    covered = 0
    for _ in range(repeats):
        low, high = compare(*two_models(rng, rows), level=LEVEL)["metrics"][statistic]["interval"]
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
def test_without_both_outcomes_the_auc_is_undefined_and_nothing_is_settled(outcomes):
    probas = np.linspace(0.2, 0.8, len(outcomes))
    found = compare(outcomes, probas, probas[::-1])
    assert found["metrics"]["roc_auc"] | {"higher_is_better": None} == dict.fromkeys(
        ["running", "challenger", "difference", "interval", "higher_is_better", "better"]
    )
    assert found["verdict"] == "not distinguishable yet"
    assert found["pairs_to_settle"] is None
    assert found["pairs"] == len(outcomes)
