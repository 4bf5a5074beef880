"""The arithmetic behind /stats and /model, checked against scikit-learn with no database and no Flask."""

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.model_card import categories_seen, model_card
from service.monitoring.histogram import Histogram
from service.monitoring.periods import FINE_BINS
from service.monitoring.reports import calibration, distribution
from service.schema import Labels, RequestSchema


def histogram_of(truth, probas):
    """The Histogram the triggers would build for these labelled rows (tables.bin_upsert)."""
    bins = np.minimum((probas * FINE_BINS).astype(int), FINE_BINS - 1)
    rows = []
    for bin in np.unique(bins):
        inside = bins == bin
        positives = int(truth[inside].sum())
        rows.append(
            (
                bin,
                positives,
                int(inside.sum()) - positives,
                probas[inside].sum(),
                probas[inside].min(),
                probas[inside].max(),
            )
        )
    return Histogram().add_rows(rows)


def with_exact_probas(histogram, truth, probas, bins):
    """What exact_probas reads from the table for `bins`."""
    for bin in bins:
        inside = np.minimum((probas * FINE_BINS).astype(int), FINE_BINS - 1) == bin
        for proba in np.unique(probas[inside]):
            same = inside & (probas == proba)
            histogram.exact.setdefault(bin, {})[proba] = [
                int(truth[same].sum()),
                int((truth[same] == 0).sum()),
            ]
    return histogram


def labelled_rows(seed, size, spread=1.0):
    rng = np.random.default_rng(seed)
    probas = rng.random(size) * spread
    return (rng.random(size) < probas).astype(int), probas


def test_binned_auc_is_within_its_stated_bound_and_under_1e_4_for_spread_probas():
    truth, probas = labelled_rows(1, 200_000)
    auc, max_error = histogram_of(truth, probas).roc_auc()
    assert abs(auc - roc_auc_score(truth, probas)) <= max_error
    assert 0 < max_error < 1e-4


@pytest.mark.parametrize("decimals", [2, 3])  # every bin holds one distinct proba: ties, known exactly
def test_binned_auc_is_exact_when_no_bin_holds_two_distinct_probas(decimals):
    truth, probas = labelled_rows(decimals, 5_000)
    probas = probas.round(decimals)
    auc, max_error = histogram_of(truth, probas).roc_auc()
    assert max_error == 0
    assert auc == pytest.approx(roc_auc_score(truth, probas), abs=1e-12)


def test_reading_the_worst_bins_exactly_brings_the_error_under_the_target():
    truth, probas = labelled_rows(3, 20_000, spread=0.0005)  # every proba in 5 bins: the worst case
    histogram = histogram_of(truth, probas)
    auc, max_error = histogram.roc_auc()
    assert max_error > 0.05
    worst = histogram.worst_bins(target=1e-4)
    with_exact_probas(histogram, truth, probas, worst)
    auc, max_error = histogram.roc_auc()
    assert max_error <= 1e-4
    assert abs(auc - roc_auc_score(truth, probas)) <= max(max_error, 1e-12)
    with_exact_probas(histogram, truth, probas, range(FINE_BINS))
    assert histogram.roc_auc() == (pytest.approx(roc_auc_score(truth, probas), abs=1e-12), 0)


def test_auc_is_undefined_with_one_class_only():
    truth, probas = np.ones(5, dtype=int), np.linspace(0.1, 0.9, 5)
    assert histogram_of(truth, probas).roc_auc() == (None, None)


def test_all_ties_give_an_auc_of_one_half():
    truth, probas = np.array([1, 0, 0, 1]), np.full(4, 0.3)
    assert histogram_of(truth, probas).roc_auc() == (0.5, 0)


def test_calibration_and_histogram_tables_add_up_the_bins():
    truth, probas = labelled_rows(4, 10_000)
    histogram = histogram_of(truth, probas)
    table = calibration(histogram)
    assert [row["from"] for row in table] == pytest.approx(np.arange(10) / 10)
    for row in table:
        inside = (probas >= row["from"]) & (probas < row["to"])
        assert row["labelled"] == inside.sum()
        assert row["mean_proba"] == pytest.approx(probas[inside].mean(), abs=1e-6)
        assert row["observed_positive_rate"] == pytest.approx(truth[inside].mean(), abs=1e-6)
    spread = distribution(histogram)
    assert len(spread) == 20
    assert sum(row["positives"] for row in spread) == truth.sum()
    assert sum(row["negatives"] for row in spread) == (truth == 0).sum()


def test_the_model_card_lists_features_categories_and_the_positive_class():
    X = pd.DataFrame(
        {
            "colour": ["red", "blue", "red", "green"],
            "size": [1.0, 2.0, 3.0, 4.0],
            "shape": pd.Categorical(
                ["round", "square", "round", "round"], categories=["round", "square", "star"]
            ),
        }
    )
    encode = ColumnTransformer([("cat", OneHotEncoder(), ["colour", "shape"])], remainder="passthrough")
    pipeline = make_pipeline(encode, LogisticRegression()).fit(X, ["no", "yes", "no", "yes"])
    schema = RequestSchema(list(X.columns), X.dtypes)

    card = model_card(pipeline, schema, Labels(pipeline.classes_), "ab" * 32, {})

    assert categories_seen(pipeline) == {"colour": ["blue", "green", "red"], "shape": ["round", "square"]}
    assert card["model_version"] == "ab" * 6
    assert card["classes"] == ["no", "yes"]
    assert card["positive_class"] == "yes"
    assert card["features"] == [
        {"name": "colour", "dtype": "str", "accepts": "string", "categories": ["blue", "green", "red"]},
        {"name": "size", "dtype": "float64", "accepts": "number"},
        # what the column takes, which is its dtype's categories, not only those seen in training
        {
            "name": "shape",
            "dtype": "category",
            "accepts": "category",
            "categories": ["round", "square", "star"],
        },
    ]
    assert all(versions["trained_with"] is None for versions in card["versions"].values())


def test_doubtful_bins_are_read_in_runs_unless_many_rows_lie_between():
    from service.monitoring.exact import SPAN_GAP_ROWS, spans

    rows_in = np.zeros(FINE_BINS, dtype=np.int64)
    assert spans([3, 7, 9000], rows_in) == [(3, 9000)]  # nothing between: one query
    rows_in[100] = SPAN_GAP_ROWS
    assert spans([3, 7, 9000], rows_in) == [(3, 7), (9000, 9000)]
    assert spans([5], rows_in) == [(5, 5)]
    assert spans([], rows_in) == []
