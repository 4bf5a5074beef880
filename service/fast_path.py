"""A fitted scikit-learn pipeline evaluated from its own fitted parameters with numpy.

predict_proba spends most of its time, for the few rows of a request, on what it does once per
call whatever the rows: selecting columns from a DataFrame, checking inputs, converting them. The
arithmetic of the fitted steps is a few array operations. This module rebuilds a pipeline's
steps from their fitted attributes, so the service can skip that overhead; model.py checks the
result against predict_proba before it serves anything through it.

Contract:
- `build(pipeline, kinds)`: a `FastPath` for the fitted pipeline (a Pipeline, or a bare
  classifier) whose features are of these kinds (RequestSchema.kinds), or raises `NotCovered`
  naming the first step it can't rebuild and why. Steps are matched on their exact class: a
  subclass (a user's own transformer) may behave otherwise, so it is not covered. Covered:
  Pipeline, ColumnTransformer, SimpleImputer, OneHotEncoder, OrdinalEncoder, StandardScaler,
  MinMaxScaler, FunctionTransformer without a function, then a binary LogisticRegression,
  RandomForestClassifier, ExtraTreesClassifier or DecisionTreeClassifier.
- `FastPath.probabilities(feature_rows)`: the positive class's probability of each row of
  validated features, a 1-D float64 array. The rows' columns are the arrays scikit-learn makes
  of the DataFrame RequestSchema.frame builds, without building it (`columns_of`). It raises
  `Refused` for rows it must not answer for: a value scikit-learn would refuse or might treat
  otherwise (an unknown category an encoder errors on, an infinite number, a missing value that
  reaches the classifier, anything that fails to convert). The caller then asks predict_proba,
  which answers or refuses exactly as it always has.
"""

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)
from sklearn.tree import DecisionTreeClassifier


class NotCovered(Exception):
    """A step of the pipeline this module can't rebuild; the message names it and says why."""


class Refused(Exception):
    """Rows this fast path must not answer for; predict_proba must be asked instead."""


class FastPath:
    def __init__(self, transforms, classifier, kinds):
        self.transforms = transforms
        self.classifier = classifier
        self.kinds = kinds

    def probabilities(self, feature_rows):
        data = Named(columns_of(feature_rows, self.kinds))
        try:
            for transform in self.transforms:
                data = transform(data)
            return self.classifier(matrix(data))
        except Refused:
            raise
        except (TypeError, ValueError, KeyError, IndexError) as exc:  # scikit-learn decides these
            raise Refused(str(exc)) from exc


class Named:
    """The request's columns by name, as the pipeline's first step receives its DataFrame."""

    def __init__(self, columns):
        self.columns = columns
        self.names = list(columns)

    def select(self, indices):
        return np.column_stack([self.columns[self.names[i]] for i in indices])


def columns_of(feature_rows, kinds):
    """{name: 1-D array}: numbers as numbers (an integer or boolean column with a missing value as
    floats, as pandas' nullable types reach scikit-learn), other values as objects, missing as NaN."""
    return {name: column([row[name] for row in feature_rows], kind) for name, kind in kinds.items()}


NUMPY_TYPES = {"integer": np.int64, "number": np.float64, "boolean": np.bool_}


def column(values, kind):
    numpy_type = NUMPY_TYPES.get(kind)
    if None not in values:
        return np.array(values, dtype=numpy_type or object)
    missing = [np.nan if value is None else value for value in values]
    return np.array(missing, dtype=np.float64 if numpy_type else object)


def select(data, indices):
    return data.select(indices) if isinstance(data, Named) else data[:, indices]


def matrix(data):
    return data.select(range(len(data.names))) if isinstance(data, Named) else data


def numbers(X):
    """X as float64, as a numeric step converts it; an infinite value is refused (scikit-learn
    raises on it)."""
    X = np.asarray(X, dtype=np.float64)
    if np.isinf(X).any():
        raise Refused("an infinite value")
    return X


def is_missing(X):
    return np.isnan(X) if X.dtype.kind == "f" else X != X  # NaN is the one value unequal to itself


def skipped(step):
    return step is None or (isinstance(step, str) and step == "passthrough")


def build(pipeline, kinds):
    steps = pipeline.steps if type(pipeline) is Pipeline else [("classifier", pipeline)]
    *transformers, (last_name, last) = [(name, step) for name, step in steps if not skipped(step)]
    classifier = CLASSIFIERS.get(type(last))
    if classifier is None:
        raise NotCovered(f"{last_name} ({type(last).__name__}): not a classifier the fast path knows")
    transforms = [transform_of(step, name) for name, step in transformers]
    return FastPath(transforms, classifier(last, last_name, arrives_sparse(transformers)), kinds)


def arrives_sparse(transformers):
    """Whether scikit-learn hands the classifier a sparse matrix: the step before it is a
    ColumnTransformer that chose sparse output, or a OneHotEncoder with sparse output."""
    if not transformers:
        return False
    last = transformers[-1][1]
    if type(last) is ColumnTransformer:
        return bool(getattr(last, "sparse_output_", False))
    return type(last) is OneHotEncoder and bool(last.sparse_output)


def transform_of(step, path):
    builder = TRANSFORMERS.get(type(step))
    if builder is None:
        raise NotCovered(f"{path} ({type(step).__name__}): not a step the fast path knows")
    return builder(step, path)


# Transformers: each builder returns a function from the step's input to its output.
def pipeline_transform(pipeline, path):
    parts = [transform_of(step, f"{path} > {name}") for name, step in pipeline.steps if not skipped(step)]

    def transform(data):
        for part in parts:
            data = part(data)
        return data

    return transform


def column_transformer(ct, path):
    indices = getattr(ct, "_transformer_to_input_indices", None)
    if indices is None:
        raise NotCovered(f"{path}: a ColumnTransformer from another scikit-learn version")
    parts = []
    for name, step, columns in ct.transformers_:
        if isinstance(columns, (str, int)):
            raise NotCovered(f"{path} > {name}: a single column given as a scalar (1-D input)")
        if step == "drop" or not len(indices[name]):
            continue
        part = (lambda data: data) if step == "passthrough" else transform_of(step, f"{path} > {name}")
        parts.append((indices[name], part))

    def transform(data):
        return np.hstack([part(select(data, chosen)) for chosen, part in parts])

    return transform


def identity(transformer, path):
    """A FunctionTransformer without a function (what ColumnTransformer's remainder="passthrough"
    becomes): its input, unchanged."""
    if transformer.func is not None:
        raise NotCovered(f"{path}: a FunctionTransformer with a function")
    return lambda data: matrix(data)


def simple_imputer(imputer, path):
    missing = imputer.missing_values
    if not (isinstance(missing, float) and np.isnan(missing)) and missing is not pd.NA:
        raise NotCovered(f"{path}: missing_values={missing!r} (only NaN is covered)")
    if imputer.add_indicator:
        raise NotCovered(f"{path}: add_indicator=True")
    statistics = imputer.statistics_
    if statistics.dtype.kind == "f" and np.isnan(statistics).any():
        raise NotCovered(f"{path}: a feature with no value in training")
    numeric = imputer.strategy in ("mean", "median")

    def transform(data):
        X = matrix(data)
        if numeric or X.dtype.kind != "O":
            X = numbers(X)
        return np.where(is_missing(X), statistics, X)

    return transform


def standard_scaler(scaler, path):
    def transform(data):
        X = numbers(matrix(data))
        if scaler.with_mean:
            X = X - scaler.mean_
        if scaler.with_std:
            X = X / scaler.scale_
        return X

    return transform


def min_max_scaler(scaler, path):
    low, high = scaler.feature_range

    def transform(data):
        X = numbers(matrix(data)) * scaler.scale_
        X += scaler.min_
        return np.clip(X, low, high) if scaler.clip else X

    return transform


class Lookup:
    """One feature's categories as slots: value -> slot, with missing (NaN) looked up apart."""

    def __init__(self, categories, slot_of_index):
        self.slots = {}
        self.missing_slot = None
        for index, category in enumerate(categories):
            slot = slot_of_index(index)
            if isinstance(category, float) and np.isnan(category):
                self.missing_slot = slot
            else:
                self.slots[category] = slot

    def find(self, value, unknown, refuse_unknown=False):
        """The value's slot; an unknown value's is `unknown`, or Refused if the encoder errors on it."""
        if value != value:  # NaN
            found = self.missing_slot if self.missing_slot is not None else KeyError
        else:
            found = self.slots.get(value, KeyError)
        if found is not KeyError:
            return found
        if refuse_unknown:
            raise Refused(f"an unknown category {value!r}")
        return unknown


def one_hot_encoder(encoder, path):
    unknown_rule = encoder.handle_unknown
    if unknown_rule not in ("error", "ignore", "infrequent_if_exist", "warn"):
        raise NotCovered(f"{path}: handle_unknown={unknown_rule!r}")
    infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * len(encoder.categories_)
    drop_idx = encoder.drop_idx_ if encoder.drop_idx_ is not None else [None] * len(encoder.categories_)
    features, width = [], 0
    for categories, rare, dropped in zip(encoder.categories_, infrequent, drop_idx, strict=True):
        lookup, n_slots, rare_slot = one_hot_slots(categories, rare)
        dropped_slot = None if dropped is None else lookup.find(categories[dropped], None)
        unknown = rare_slot if unknown_rule == "infrequent_if_exist" else None
        columns = [slot for slot in range(n_slots) if slot != dropped_slot]
        position = {slot: width + i for i, slot in enumerate(columns)}
        features.append((lookup, unknown, position))
        width += len(columns)
    refuse_unknown = unknown_rule == "error"

    def transform(data):
        X = matrix(data)
        out = np.zeros((X.shape[0], width))
        for j, (lookup, unknown, position) in enumerate(features):
            for i, value in enumerate(X[:, j].tolist()):
                slot = lookup.find(value, unknown, refuse_unknown)
                if slot in position:
                    out[i, position[slot]] = 1.0
        return out

    return transform


def one_hot_slots(categories, rare):
    """(Lookup, number of slots, the infrequent slot or None): the frequent categories in order,
    then one slot shared by the infrequent ones."""
    if rare is None:
        return Lookup(categories, lambda index: index), len(categories), None
    is_rare = np.isin(categories, rare)
    frequent_slot = np.cumsum(~is_rare) - 1
    rare_slot = int((~is_rare).sum())
    lookup = Lookup(categories, lambda index: rare_slot if is_rare[index] else int(frequent_slot[index]))
    return lookup, rare_slot + 1, rare_slot


def ordinal_encoder(encoder, path):
    rare = getattr(encoder, "infrequent_categories_", None)
    if rare and any(found is not None for found in rare):
        raise NotCovered(f"{path}: infrequent categories")
    refuse_unknown = encoder.handle_unknown == "error"
    unknown = encoder.unknown_value
    lookups = []
    for categories in encoder.categories_:
        lookup = Lookup(categories, float)
        if lookup.missing_slot is not None:
            lookup.missing_slot = encoder.encoded_missing_value
        lookups.append(lookup)

    def transform(data):
        X = matrix(data)
        out = np.empty(X.shape, dtype=np.float64)
        for j, lookup in enumerate(lookups):
            for i, value in enumerate(X[:, j].tolist()):
                out[i, j] = lookup.find(value, unknown, refuse_unknown)
        return out

    return transform


# Classifiers: each builder returns a function from the final matrix to the positive class's probability.
def logistic_regression(model, path, sparse):
    if len(model.classes_) != 2:
        raise NotCovered(f"{path}: more than two classes")
    coef, intercept = model.coef_, model.intercept_

    def probabilities(X):
        X = np.asarray(X, dtype=np.float64)
        if not np.isfinite(X).all():
            raise Refused("a missing or infinite value reaches the classifier")
        return expit(decision(X) + intercept)

    def decision(X):
        if sparse:
            # scipy multiplies a sparse row by adding its products left to right, without BLAS:
            # the same sums, bit for bit, on every CPU (a zero's product adds nothing).
            return np.cumsum(X * coef[0], axis=1)[:, -1]
        return (X @ coef.T).reshape(-1)  # the BLAS call scikit-learn makes on a dense matrix

    return probabilities


def tree_ensemble(model, path, sparse):  # trees compare one value at a time: sparse or not, alike
    trees = list(getattr(model, "estimators_", [model]))
    if len(model.classes_) != 2 or model.n_outputs_ != 1:
        raise NotCovered(f"{path}: not a binary classifier with one output")

    def probabilities(X):
        with np.errstate(over="ignore"):  # a number too large for float32 becomes inf, refused below
            X = np.ascontiguousarray(np.asarray(X, dtype=np.float64), dtype=np.float32)
        if not np.isfinite(X).all():
            raise Refused("a missing or infinite value reaches the trees")
        total = np.zeros((X.shape[0], 2))
        for tree in trees:  # in order, as the forest adds them
            total += tree.predict_proba(X, check_input=False)
        if len(trees) > 1 or hasattr(model, "estimators_"):
            total /= len(trees)
        return total[:, 1]

    return probabilities


TRANSFORMERS = {
    Pipeline: pipeline_transform,
    FunctionTransformer: identity,
    ColumnTransformer: column_transformer,
    SimpleImputer: simple_imputer,
    OneHotEncoder: one_hot_encoder,
    OrdinalEncoder: ordinal_encoder,
    StandardScaler: standard_scaler,
    MinMaxScaler: min_max_scaler,
}
CLASSIFIERS = {
    LogisticRegression: logistic_regression,
    RandomForestClassifier: tree_ensemble,
    ExtraTreesClassifier: tree_ensemble,
    DecisionTreeClassifier: tree_ensemble,
}
