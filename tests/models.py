"""Models that are not the Titanic one, trained on the spot, for the tests that must hold for any model.

Each writes the files a user drops into the repository (pipeline.pickle, dtypes.pickle,
columns.json, model_meta.json, training_profile.json, as Step 1's cells would), plus the CSV it
was trained on (training.csv) and the rows held back to test it (held_back.csv), into a
directory of its own.
"""

import json
import shutil

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from tools import retrain
from tools.servers import EXAMPLE_DIR


def write_artifacts(directory, pipeline, X, y, target, held_back):
    """What Step 1 writes, for this pipeline, its training frame and the rows held back."""
    retrain.write_model(directory, pipeline, X, y, target, held_back)
    X_test, y_test = held_back
    X_test.assign(**{target: y_test}).to_csv(directory / "held_back.csv", index=False)
    return directory


def split(X, y):
    """(X_train, y_train, (X_test, y_test)): 30% held back, as Step 1 holds back 20%."""
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    return X_train, y_train, (X_test, y_test)


def float_features_with_spaces(directory):
    """Breast cancer (shipped with scikit-learn): 30 float features named like "mean radius"."""
    data = load_breast_cancer(as_frame=True)
    X, y, held_back = split(data.data, data.target)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    return write_artifacts(directory, pipeline, X, y, "diagnosis", held_back)


def mixed_dtypes_with_string_labels(directory, rows=400):
    """A churn model: str, int64, float64 with missing values, bool and category inputs;
    the labels are the strings "churn" and "stay"."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "tenure months": rng.integers(1, 72, rows),
            "monthly fee": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(30, 10, rows).round(2)),
            "has phone": rng.random(rows) < 0.6,
            "region": pd.Categorical(rng.choice(["east", "north", "south"], rows)),
        }
    )
    leaving = X["tenure months"] < 12 + 20 * (X["plan"] == "pro") + rng.normal(0, 8, rows)
    y = pd.Series(np.where(leaving, "churn", "stay"), name="status")
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
            ("fee", SimpleImputer(strategy="median"), ["monthly fee"]),
        ],
        remainder="passthrough",
    )
    X, y, held_back = split(X, y)
    pipeline = make_pipeline(encode, StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    return write_artifacts(directory, pipeline, X, y, "status", held_back)


def beside_the_example_s_files(directory):
    """What copying three files does: the churn model's pipeline.pickle, dtypes.pickle and
    columns.json, with the example's model_meta.json and training_profile.json left in place
    (both describe another pipeline, so the service ignores them and says so)."""
    mixed_dtypes_with_string_labels(directory)
    for name in ("model_meta.json", "training_profile.json"):
        shutil.copy(EXAMPLE_DIR / name, directory / name)
    return directory


def titanic_frame():
    """The example's training data, as Step 1 reads it: (features, outcome)."""
    data = pd.read_csv(EXAMPLE_DIR / "titanic.csv")
    columns = json.loads((EXAMPLE_DIR / "columns.json").read_text())
    return data[columns], data["Survived"]


def titanic_challenger(directory, features=("Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked")):
    """A retrained Titanic model, as a challenger: a random forest on the example's features but
    Cabin (a retrained model may use fewer features than the running one, never more)."""
    X, y = titanic_frame()
    X = X[list(features)]
    categorical = [column for column in ("Sex", "Embarked") if column in features]
    encode = ColumnTransformer(
        [
            (
                "categories",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                ),
                categorical,
            )
        ],
        remainder=SimpleImputer(strategy="median"),
    )
    X, y, held_back = split(X, y)
    pipeline = make_pipeline(
        encode, RandomForestClassifier(n_estimators=30, min_samples_leaf=5, random_state=0)
    )
    return write_artifacts(directory, pipeline.fit(X, y), X, y, "Survived", held_back)


UNSCORABLE_FARE = 1234.5  # no probe row has it: a failure the start-up check can't see


def fails_on_one_fare(frame):
    """A custom step that raises for one fare: a challenger that fails on some rows only."""
    if (frame["Fare"] == UNSCORABLE_FARE).any():
        raise ValueError(f"this challenger can't score a fare of {UNSCORABLE_FARE}")
    return frame


def titanic_challenger_failing_on_one_fare(directory):
    X, y = titanic_frame()
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), ["Sex"])],
        remainder=SimpleImputer(strategy="median"),
    )
    X, y, held_back = split(X[["Pclass", "Sex", "Age", "Fare"]], y)
    pipeline = make_pipeline(
        FunctionTransformer(fails_on_one_fare), encode, LogisticRegression(max_iter=1000)
    )
    return write_artifacts(directory, pipeline.fit(X, y), X, y, "Survived", held_back)


OTHER_MODELS = {
    "float-features-with-spaces": float_features_with_spaces,
    "mixed-dtypes-string-labels": mixed_dtypes_with_string_labels,
}
# A model with files beside it that describe another: for the tests that must follow any model.
COPIED_OVER = {"three-files-copied-over-the-example": beside_the_example_s_files}
