"""The arithmetic behind /stats and /model, checked against scikit-learn with no database and no Flask."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from monitoring import categories_seen, model_card, quality_metrics
from schema import Labels, RequestSchema


def sums(truth, probas):
    """What QUALITY_SQL returns for these rows: count, positives, and the sums it averages."""
    clipped = np.clip(probas, 1e-15, 1 - 1e-15)
    log_losses = -np.where(truth == 1, np.log(clipped), np.log(1 - clipped))
    average_ranks = rankdata(probas)  # RANK() plus half the ties above it, as the SQL computes
    return (
        len(truth),
        int(truth.sum()),
        probas.mean(),
        ((probas - truth) ** 2).mean(),
        log_losses.mean(),
        average_ranks[truth == 1].sum(),
    )


@pytest.mark.parametrize("decimals", [2, 6])  # 2 decimals: many tied probabilities
def test_metrics_from_the_sums_equal_scikit_learns(decimals):
    rng = np.random.default_rng(decimals)
    probas = rng.random(500).round(decimals)
    truth = (rng.random(500) < probas).astype(int)

    metrics = quality_metrics(*sums(truth, probas))

    assert metrics["labelled"] == 500
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(truth, probas), abs=1e-6)
    assert metrics["log_loss"] == pytest.approx(log_loss(truth, probas), abs=1e-6)
    assert metrics["brier_score"] == pytest.approx(brier_score_loss(truth, probas), abs=1e-6)
    assert metrics["observed_positive_rate"] == pytest.approx(truth.mean(), abs=1e-6)


def test_auc_is_undefined_with_one_class_only():
    truth, probas = np.ones(5, dtype=int), np.linspace(0.1, 0.9, 5)
    metrics = quality_metrics(*sums(truth, probas))
    assert metrics["roc_auc"] is None
    assert metrics["observed_positive_rate"] == 1.0


def test_all_ties_give_an_auc_of_one_half():
    truth, probas = np.array([1, 0, 0, 1]), np.full(4, 0.3)
    assert quality_metrics(*sums(truth, probas))["roc_auc"] == 0.5


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
