"""The training profile: what the training data looked like, feature by feature, and how the
model did on its test set. Drift and the expected quality are measured against it.

Contract:
- `build(X_train, pipeline_sha256, test_probas, test_truth)`: the profile, a JSON-ready dict.
  Per feature, in the training columns' order, the bins and the training share of each:
  numbers with more than MAX_VALUES distinct values are cut at the training deciles (each bin
  closed on the right, the first and last open-ended); any other feature (text, bool, category,
  numbers with few values) has a bin per commonest value, up to MAX_VALUES, and one "(other)"
  for the rest; a missing value is a bin of its own, always last. Also per feature: what training
  saw (a number's range; the rarer values as short hashes, when there are at most MAX_SEEN, so
  that the file never holds a rare value, which may identify a person) and a typical value (the
  median, else the commonest; None when most values are missing). On the test set: its rows, ROC AUC, positive
  rate and the histogram of probabilities (PROBA_BINS bins).
- `write(profile, directory)` writes training_profile.json (FILE_NAME); `read(directory,
  pipeline_sha256)` returns (Profile or None, why None): a model deployed without one, or with
  one that describes another pipeline, still serves.
- `Profile(document)`: `codes(feature_rows)` gives each row one character per feature, in the
  columns' order, naming its bin and whether training never saw the value (`decode()` undoes
  it; the database counts the characters, see monitoring/drift.py). `frame_codes(frame)` does
  the same for a DataFrame; `counts(frame)` and `psi_of(frame)` are each feature's rows per bin and
  PSI, for Step 3. `typical_observation()` is a plausible row.
- `psi(training_shares, counts)`: the population stability index of counts against shares,
  sum((now - training) * ln(now / training)) over the bins, each share floored at PSI_FLOOR.
  The one definition that /drift and Step 3 both use.
"""

import hashlib
import json
import math
from bisect import bisect_left

import numpy as np
import pandas as pd

FILE_NAME = "training_profile.json"
FORMAT = 1
MAX_VALUES = 10  # bins per text feature (then "(other)"), and the distinct numbers that make one
MAX_SEEN = 1000  # the distinct values kept to tell an unseen one; past this, unseen is unknown
DECILES = np.linspace(0, 1, 11)
PROBA_BINS = 20
PSI_FLOOR = 1e-4  # a bin empty on one side would make PSI infinite
# A bin is a character: its index, plus UNSEEN for a value training never saw.
ALPHABET = "0123456789abcdefghijklmnopqrstuv"
UNSEEN = 16
MISSING, OTHER = "(missing)", "(other)"


def is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def plain(value):
    """A training value as the JSON value a request would carry."""
    return value.item() if isinstance(value, np.generic) else value


def fingerprint(value):
    """A rarer training value, as the profile keeps it: enough to recognise it, not to read it."""
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()[:12]


def is_binned_by_deciles(values):
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return numeric and values.nunique() > MAX_VALUES


def shares(counts, rows):
    return [round(count / rows, 12) if rows else 0.0 for count in counts]


def numeric_feature(name, values):
    numbers = values.astype(float).dropna()
    edges = np.unique(np.quantile(numbers, DECILES))
    inner = edges[1:-1].tolist()
    bins = np.searchsorted(inner, numbers, side="left")
    counts = np.bincount(bins, minlength=len(inner) + 1).tolist() + [int(values.isna().sum())]
    median = float(np.quantile(numbers, 0.5, method="lower"))
    typical = int(median) if pd.api.types.is_integer_dtype(values) else median
    typical = None if values.isna().mean() > 0.5 else typical  # mostly missing: missing is typical
    return {
        "name": name,
        "kind": "deciles",
        "edges": inner,
        "seen": [float(edges[0]), float(edges[-1])],
        "shares": shares(counts, len(values)),
        "typical": typical,
    }


def values_feature(name, values):
    present = values.astype(object)[values.notna()]
    counted = present.map(plain).value_counts()
    # Commonest first; equal counts in the values' text order, so the profile is reproducible.
    order = sorted(counted.items(), key=lambda item: (-item[1], str(item[0])))
    common = [value for value, _ in order[:MAX_VALUES]]
    rest = sum(count for _, count in order[MAX_VALUES:])
    counts = [count for _, count in order[:MAX_VALUES]] + [rest, int(values.isna().sum())]
    rarer = sorted(fingerprint(value) for value, _ in order[MAX_VALUES:]) if len(order) <= MAX_SEEN else None
    return {
        "name": name,
        "kind": "values",
        "values": common,
        "rarer_seen": rarer,
        "shares": shares(counts, len(values)),
        "typical": common[0] if common and values.isna().mean() <= 0.5 else None,
    }


def test_summary(test_probas, test_truth):
    """How the model did on its test set: the reference for the expected quality."""
    from sklearn.metrics import roc_auc_score

    probas, truth = np.asarray(test_probas, dtype=float), np.asarray(test_truth, dtype=bool)
    histogram = np.histogram(probas, bins=PROBA_BINS, range=(0, 1))[0].tolist()
    return {
        "rows": len(probas),
        "roc_auc": round(float(roc_auc_score(truth, probas)), 6) if 0 < truth.sum() < len(truth) else None,
        "positive_rate": round(float(truth.mean()), 6),
        "mean_proba": round(float(probas.mean()), 6),
        "proba_shares": shares(histogram, len(probas)),
    }


def build(X_train, pipeline_sha256, test_probas, test_truth):
    """The profile of a model's training frame and of its test set's probabilities."""
    features = [
        numeric_feature(name, X_train[name])
        if is_binned_by_deciles(X_train[name])
        else values_feature(name, X_train[name])
        for name in X_train.columns
    ]
    return {
        "format": FORMAT,
        "pipeline_sha256": pipeline_sha256,
        "training_rows": len(X_train),
        "features": features,
        "test": test_summary(test_probas, test_truth),
    }


def write(profile, directory):
    path = directory / FILE_NAME
    path.write_text(json.dumps(profile, indent=1, ensure_ascii=False) + "\n")
    return path


HOW_TO_MAKE = (
    "run Step 1's 'Profile the training data' cell on your training data and deploy "
    f"{FILE_NAME} beside pipeline.pickle"
)


def read(directory, pipeline_sha256):
    """(Profile, None), or (None, why there is none to use)."""
    path = directory / FILE_NAME
    if not path.is_file():
        return None, f"no {FILE_NAME} for this model: {HOW_TO_MAKE}"
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        return None, f"{FILE_NAME} is not valid JSON ({exc}): {HOW_TO_MAKE}"
    if document.get("format") != FORMAT or document.get("pipeline_sha256") != pipeline_sha256:
        return None, f"{FILE_NAME} describes another pipeline.pickle: {HOW_TO_MAKE}"
    return Profile(document), None


class FeatureBins:
    """One feature's bins, and the character for a value."""

    def __init__(self, spec):
        self.name, self.kind = spec["name"], spec["kind"]
        self.training = spec["shares"]
        self.missing = len(self.training) - 1
        if self.kind == "deciles":
            self.edges = spec["edges"]
            self.low, self.high = spec["seen"]
        else:
            self.index = {value: i for i, value in enumerate(spec["values"])}
            self.rarer_seen = None if spec["rarer_seen"] is None else set(spec["rarer_seen"])

    def code(self, value):
        if is_missing(value):
            return ALPHABET[self.missing]
        if self.kind == "deciles":
            unseen = not self.low <= value <= self.high
            return ALPHABET[bisect_left(self.edges, value) + UNSEEN * unseen]
        index = self.index.get(value)
        if index is not None:
            return ALPHABET[index]
        unseen = self.rarer_seen is not None and fingerprint(value) not in self.rarer_seen
        return ALPHABET[self.missing - 1 + UNSEEN * unseen]

    def labels(self):
        if self.kind == "deciles":
            bounds = [f"{edge:g}" for edge in self.edges]
            inner = [f"({low}, {high}]" for low, high in zip(bounds, bounds[1:], strict=False)]
            ends = [f"<= {bounds[0]}", *inner, f"> {bounds[-1]}"] if bounds else ["any value"]
            return [*ends, MISSING]
        names = [value if isinstance(value, str) else json.dumps(value) for value in self.index]
        return [*names, OTHER, MISSING]


def decode(character):
    """(bin index, whether training never saw the value) for a bin's character."""
    position = ALPHABET.index(character)
    return position % UNSEEN, position >= UNSEEN


class Profile:
    def __init__(self, document):
        self.document = document
        self.features = [FeatureBins(spec) for spec in document["features"]]
        self.test = document["test"]

    @property
    def columns(self):
        return [feature.name for feature in self.features]

    def codes(self, feature_rows):
        """One string per row of features ({column: value}), a character per feature."""
        return ["".join(feature.code(row[feature.name]) for feature in self.features) for row in feature_rows]

    def frame_codes(self, frame):
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        return self.codes([{name: plain(value) for name, value in row.items()} for row in rows])

    def counts(self, frame):
        """{feature: rows per bin} of a DataFrame of observations."""
        codes = self.frame_codes(frame)
        found = {feature.name: [0] * len(feature.training) for feature in self.features}
        for row in codes:
            for feature, code in zip(self.features, row, strict=True):
                found[feature.name][decode(code)[0]] += 1
        return found

    def psi_of(self, frame):
        """{feature: PSI} of a DataFrame of observations against training, as /drift computes it."""
        training = {feature.name: feature.training for feature in self.features}
        return {name: psi(training[name], counts) for name, counts in self.counts(frame).items()}

    def typical_observation(self):
        return {spec["name"]: spec["typical"] for spec in self.document["features"]}


def psi(training_shares, counts):
    """The population stability index of `counts` (per bin) against the training shares."""
    rows = sum(counts)
    total = 0.0
    for expected, count in zip(training_shares, counts, strict=True):
        expected, actual = max(expected, PSI_FLOOR), max(count / rows, PSI_FLOOR)
        total += (actual - expected) * math.log(actual / expected)
    return total
