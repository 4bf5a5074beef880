"""Pipelines with every step the fast path covers, fitted on generated data, and how far the fast
path's probabilities are from predict_proba's on rows that take every path through them.

`python -m tests.fast_path_cases` prints {case: {"serves", "why", "largest_difference", ...}}
as JSON, the example model on the training file included: tests/test_fast_path.py runs it under
each BLAS kernel, since each rounds differently.
"""

import json
import sys

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from service import model
from tools.servers import EXAMPLE_DIR

NUMBERS = ["age", "visits", "spend"]
WORDS = ["colour", "size"]


def people(rows, seed):
    """Mixed features with missing values, a rare category, and a label that depends on them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(40, 12, rows).round(1)),
            "visits": rng.integers(0, 30, rows),
            "spend": rng.lognormal(3, 1, rows),
            "colour": pd.array(
                np.where(
                    rng.random(rows) < 0.08,
                    None,
                    rng.choice(["red", "green", "blue", "violet"], rows, p=[0.45, 0.35, 0.18, 0.02]),
                ),
                dtype="str",
            ),
            "size": pd.array(rng.choice(["S", "M", "L", "XL"], rows), dtype="str"),
        }
    )
    score = (
        (frame["visits"] - 15) / 8
        + (frame["colour"] == "red")
        - (frame["size"] == "S")
        + rng.normal(0, 1, rows)
    )
    return frame, np.where(score > 0, "yes", "no")


def numeric_branch():
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler())


CASES = {
    "by name: median and most frequent imputers, one-hot (ignore), scaler, logistic": lambda: make_pipeline(
        ColumnTransformer(
            [
                ("numbers", numeric_branch(), NUMBERS),
                (
                    "words",
                    make_pipeline(
                        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                    ),
                    WORDS,
                ),
            ]
        ),
        LogisticRegression(max_iter=1000),
    ),
    "by position, remainder passthrough: mean imputer, infrequent one-hot, min-max clip": lambda: (
        make_pipeline(
            ColumnTransformer(
                [
                    ("age", SimpleImputer(strategy="mean"), [0]),
                    (
                        "words",
                        make_pipeline(
                            SimpleImputer(strategy="constant", fill_value="none"),
                            OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.05),
                        ),
                        [3, 4],
                    ),
                ],
                remainder="passthrough",
            ),
            MinMaxScaler(clip=True),
            LogisticRegression(max_iter=1000),
        )
    ),
    "remainder drop: ordinal (encoded unknown), one-hot with drop and missing as a category": lambda: (
        make_pipeline(
            ColumnTransformer(
                [
                    (
                        "size",
                        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                        ["size"],
                    ),
                    ("colour", OneHotEncoder(drop="first", handle_unknown="ignore"), ["colour"]),
                    ("age", SimpleImputer(strategy="constant", fill_value=0.0), ["age"]),
                ],
                remainder="drop",
            ),
            StandardScaler(),
            LogisticRegression(C=0.1, max_iter=1000),
        )
    ),
    "one-hot with max_categories, unknowns refused": lambda: make_pipeline(
        ColumnTransformer(
            [
                ("numbers", numeric_branch(), NUMBERS),
                (
                    "words",
                    make_pipeline(
                        SimpleImputer(strategy="most_frequent"),
                        OneHotEncoder(max_categories=3, handle_unknown="error"),
                    ),
                    WORDS,
                ),
            ]
        ),
        LogisticRegression(max_iter=1000),
    ),
    "random forest on ordinal codes": lambda: make_pipeline(
        ColumnTransformer(
            [
                ("numbers", SimpleImputer(strategy="median"), NUMBERS),
                (
                    "words",
                    make_pipeline(
                        SimpleImputer(strategy="most_frequent"),
                        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                    ),
                    WORDS,
                ),
            ]
        ),
        RandomForestClassifier(n_estimators=40, min_samples_leaf=3, random_state=0),
    ),
    "extra trees and a single tree": lambda: make_pipeline(
        ColumnTransformer([("numbers", SimpleImputer(strategy="median"), NUMBERS)]),
        ExtraTreesClassifier(n_estimators=10, random_state=0),
    ),
    "a single tree": lambda: make_pipeline(
        ColumnTransformer([("numbers", SimpleImputer(strategy="median"), NUMBERS)]),
        DecisionTreeClassifier(max_depth=6, random_state=0),
    ),
    "a bare classifier, no missing value allowed": lambda: LogisticRegression(max_iter=1000),
}
NUMERIC_ONLY = {"a bare classifier, no missing value allowed"}


def fitted(case):
    X, y = people(600, seed=0)
    if case in NUMERIC_ONLY:
        X = X[["visits", "spend"]]
    return CASES[case]().fit(X, y), X


def assembled(pipeline, X, fast=True):
    return model.assemble(
        list(X.columns), X.dtypes, pipeline, "0" * 64, {}, (None, "none"), max_string_chars=1000, fast=fast
    )


def fresh_rows(served, rows=400):
    """Rows the model never saw: other people, unseen categories, missing values everywhere."""
    X, _ = people(rows, seed=1)
    X = X[served.columns].astype(object).where(X[served.columns].notna(), None)
    records = X.to_dict(orient="records")
    for i, record in enumerate(records):
        if i % 7 == 0 and "colour" in record:
            record["colour"] = "a colour never seen"
        if i % 11 == 0:
            record[served.columns[i % len(served.columns)]] = None
    return [{c: served.schema.checked_feature(c, record[c]) for c in served.columns} for record in records]


def compared(served, rows):
    """How the fast path did on the rows against predict_proba: the largest difference, the rows
    it answered and those it left to scikit-learn (which then answers or refuses them itself),
    and the rows it answered that scikit-learn refuses (which must be none)."""
    fast = list(zip(rows, model.outcomes(served.fast.probabilities, rows), strict=True))
    answered = [(row, got) for row, got in fast if got is not None]
    expected = model.outcomes(lambda part: model.scikit_learn(served, part), [row for row, _ in answered])
    pairs = [(want, got) for (_, got), want in zip(answered, expected, strict=True)]
    return {
        "largest_difference": max((abs(w - g) for w, g in pairs if w is not None), default=0.0),
        "fast_rows": len(answered),
        "left_to_scikit_learn": len(rows) - len(answered),
        "answered_what_scikit_learn_refuses": sum(w is None for w, _ in pairs),
    }


def measure(case):
    served = assembled(*fitted(case))
    found = {"serves": served.path["serves"], "why": served.path.get("why")}
    return found | (compared(served, fresh_rows(served)) if served.fast is not None else {})


EXAMPLE = "the example, on every passenger of titanic.csv"


def measure_the_example():
    served = model.load(EXAMPLE_DIR, max_string_chars=1000)
    passengers = pd.read_csv(EXAMPLE_DIR / "titanic.csv")[served.columns]
    records = passengers.astype(object).where(passengers.notna(), None).to_dict(orient="records")
    rows = [{c: served.schema.checked_feature(c, r[c]) for c in served.columns} for r in records]
    return {"serves": served.path["serves"], "why": served.path.get("why")} | compared(served, rows)


if __name__ == "__main__":
    found = {case: measure(case) for case in CASES} | {EXAMPLE: measure_the_example()}
    json.dump(found, sys.stdout, indent=1)
