"""The fast path (service/fast_path.py) gives predict_proba's answers to 1e-12, refuses what it
refuses, serves only once it has been checked, and steps aside for what it doesn't know."""

import json
import subprocess
import sys

import numpy as np
import pytest
from fast_path_cases import CASES, EXAMPLE, NUMBERS, assembled, fitted, fresh_rows, people
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from test_notebooks import KERNELS, blas_kernel_in_use, cpu_flags

from conftest import REPO
from service import fast_path


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_covered_step_agrees_with_predict_proba_under_every_blas_kernel(kernel, monkeypatch):
    flag, reported_names = KERNELS[kernel]
    if flag not in cpu_flags():
        pytest.skip(f"this CPU lacks {flag}, which OpenBLAS's {kernel} kernel needs")
    monkeypatch.setenv("OPENBLAS_CORETYPE", kernel)
    assert blas_kernel_in_use() in reported_names

    run = subprocess.run(
        [sys.executable, "-m", "tests.fast_path_cases"], cwd=REPO, capture_output=True, text=True, timeout=300
    )

    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout)
    print(json.dumps(found, indent=1))
    assert set(found) == {*CASES, EXAMPLE}
    # The example's answers are the README's: bit for bit on every kernel, every passenger.
    assert found.pop(EXAMPLE) | {"serves": "fast path"} == {
        "serves": "fast path", "why": None, "largest_difference": 0.0, "fast_rows": 891,
        "left_to_scikit_learn": 0, "answered_what_scikit_learn_refuses": 0,
    }  # fmt: skip
    for case, result in found.items():
        assert result["serves"] == "fast path", (case, result["why"])
        assert result["largest_difference"] <= 1e-12, case
        assert result["answered_what_scikit_learn_refuses"] == 0, case
        assert result["fast_rows"] >= 300, case  # most rows took the fast path itself


class Doubled(TransformerMixin, BaseEstimator):
    """A user's own transformer: the fast path can't know what it does."""

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * 2


class ScaledTwice(StandardScaler):
    """A subclass of a covered step may behave otherwise, so it is not covered either."""


UNKNOWN_STEPS = {
    "columntransformer > numbers > doubled (Doubled)": lambda: make_pipeline(
        ColumnTransformer([("numbers", make_pipeline(Doubled()), NUMBERS)]), LogisticRegression()
    ),
    "scaledtwice (ScaledTwice)": lambda: make_pipeline(
        ColumnTransformer([("numbers", "passthrough", NUMBERS)]), ScaledTwice(), LogisticRegression()
    ),
}


@pytest.mark.parametrize("named", UNKNOWN_STEPS)
def test_a_step_it_does_not_know_is_named_and_scikit_learn_serves_exactly(named):
    X, y = people(300, seed=0)
    X = X[NUMBERS].fillna(0.0)
    pipeline = UNKNOWN_STEPS[named]().fit(X, y)
    served = assembled(pipeline, X)
    rows = [row for row in fresh_rows(served, rows=60) if None not in row.values()]

    assert served.fast is None
    assert served.path == {
        "serves": "scikit-learn",
        "why": f"the fast path does not cover {named}: not a step the fast path knows",
    }
    assert served.probabilities(rows) == pipeline.predict_proba(served.schema.frame(rows))[:, 1].tolist()


def test_a_fast_path_that_disagrees_with_predict_proba_never_serves(monkeypatch):
    pipeline, X = fitted(next(iter(CASES)))
    wrong = fast_path.TRANSFORMERS[StandardScaler]
    monkeypatch.setitem(fast_path.TRANSFORMERS, StandardScaler, lambda s, p: lambda d: wrong(s, p)(d) + 1e-9)

    served = assembled(pipeline, X)

    assert served.fast is None
    assert served.path["serves"] == "scikit-learn"
    assert served.path["why"].startswith("the fast path disagreed with predict_proba: ")


def test_the_setting_turns_it_off():
    served = assembled(*fitted(next(iter(CASES))), fast=False)

    assert served.fast is None
    assert served.path == {"serves": "scikit-learn", "why": "the fast path is off (FAST_PATH=0)"}


def test_the_example_model_is_served_by_the_fast_path_and_says_so(client, service):
    card = client.get("/model").get_json()

    if service.backend == "pgbouncer":  # conftest turns it off there
        assert card["calls"] == {"serves": "scikit-learn", "why": "the fast path is off (FAST_PATH=0)"}
        return
    assert card["calls"]["serves"] == "fast path"
    assert card["calls"]["largest_difference"] <= 1e-12
    assert card["calls"]["probes"] > 200
