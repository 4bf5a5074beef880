"""The one place that loads, checks and calls a model.

Contract:
- `load(directory, max_string_chars, fast=True)`: the `Model` whose files are in the directory,
  each read and checked against the others (artifacts.py), or ArtifactError saying what to fix.
  `assemble(...)` makes one of files already read (the tests' models).
  `Model` holds columns, dtypes, pipeline, sha256, version (the first 12 hex digits), meta
  (model_meta.json, or {}), schema (the RequestSchema of what /predict accepts), labels, profile
  and why_no_profile (training_profile.json, or why there is none to use) and `path`: how it is
  called, for /model, the start-up log and `make check-model`.
- `Model.probabilities(feature_rows)`: the positive class's probability of each row of validated
  features, as predict_proba gives it (to 1e-12), or what predict_proba raises. The fast path
  (fast_path.py) answers when it serves and covers the rows; otherwise predict_proba does.
- `Model.accepts(features)`: whether the model scores the row.
- `MODEL_FILES`: a model's files; `CHALLENGER_FOLDER`: where a challenger's sit.
- `load_challenger(directory, running, max_string_chars, fast=True)`: a `Challenger` for the model
  whose files are in `directory` (the `challenger/` folder beside the running model's), loaded and
  checked like the running model, or None where there are none. It serves (`Challenger.model`)
  only if it takes every request the running model takes: the same classes, no feature the
  requests don't carry, and every probe value of the running model's features accepted by its
  schema; otherwise `Challenger.refused` says why, for /model and the start-up log. Probe rows
  it can't score (a tree ensemble refuses a number too large for float32) don't refuse it:
  `Challenger.failing` says which, and such rows are stored without its answer.
  `Challenger.probabilities(feature_rows)`: its probability of each row of the running model's
  validated features, None where it fails (found by halving), never raising.

The fast path serves only once it has agreed with predict_proba on every probe row
(`probe_rows`): the training profile's bins and typical row, every category seen in training and
an unseen one, every feature missing, extreme numbers, and mixes of them. A probe row scikit-learn
refuses must be refused by the fast path too. `fast=False` (the FAST_PATH setting) skips it.
"""

import logging
import random
import warnings
from dataclasses import dataclass, field

from service import artifacts, fast_path, metrics, model_card, schema
from service.errors import ApiError
from service.monitoring import profile as training_profile

log = logging.getLogger(__name__)
CHALLENGER_FOLDER = "challenger"  # beside the running model's files
# A model's files: the first three required, the others read when they describe its pipeline.
MODEL_FILES = (
    "pipeline.pickle",
    "dtypes.pickle",
    "columns.json",
    "model_meta.json",
    training_profile.FILE_NAME,
)
TOLERANCE = 1e-12  # the largest difference from predict_proba the fast path may make
MIXED_PROBES = 64  # random mixes of the probe values, on top of one row per value
EXTREME_NUMBERS = (0.0, -0.0, 1.5, -1.5, 1e-300, -1e-300, 1e6, -1e6, 1e15, -1e15, 1e300, -1e300)
EXTREME_INTEGERS = (0, 1, -1, 2**31, -(2**31), 2**53, -(2**53))


@dataclass
class Model:
    columns: list
    dtypes: object
    pipeline: object
    sha256: str
    meta: dict
    schema: object
    labels: object
    profile: object
    why_no_profile: str | None
    fast: object = None
    path: dict = field(default_factory=dict)
    role: str = "running"  # or "challenger"

    @property
    def version(self):
        return self.sha256[:12]

    def probabilities(self, feature_rows):
        if self.fast is not None:
            try:
                found = self.fast.probabilities(feature_rows).tolist()
            except fast_path.Refused:
                pass
            else:
                self.count_call("fast")
                return found
        self.count_call("scikit-learn")
        return scikit_learn(self, feature_rows).tolist()

    def count_call(self, path):
        if self.role == "running":  # model_calls_total counts the running model's calls
            metrics.MODEL_CALLS.labels(path).inc()

    def accepts(self, features):
        try:
            self.probabilities([features])
        except Exception:
            return False
        return True


def load(directory, max_string_chars, fast=True):
    columns = artifacts.load_columns(directory)
    dtypes = artifacts.load_dtypes(directory, columns)
    pipeline, sha256 = artifacts.load_pipeline(directory)
    artifacts.check_columns_against_pipeline(columns, pipeline)
    meta = artifacts.training_versions(directory, sha256)
    found_profile = training_profile.read(directory, sha256)
    return assemble(columns, dtypes, pipeline, sha256, meta, found_profile, max_string_chars, fast)


def assemble(columns, dtypes, pipeline, sha256, meta, found_profile, max_string_chars, fast):
    """The Model of files already read and checked; found_profile is (Profile, why there is none)."""
    model = Model(
        columns,
        dtypes,
        pipeline,
        sha256,
        meta,
        schema.RequestSchema(columns, dtypes, max_string_chars),
        schema.Labels(pipeline.classes_),  # negative first; predict_proba's second column is positive
        *found_profile,
    )
    model.fast, model.path = choose_path(model, fast)
    log.info("model %s is called through %s", model.version, describe_path(model.path))
    return model


@dataclass
class Challenger:
    directory: object
    model: Model | None
    refused: str | None = None  # why it scores nothing
    failing: str | None = None  # the probe rows it fails on, though it serves

    @property
    def serves(self):
        return self.model is not None

    def probabilities(self, feature_rows):
        own = [{column: row[column] for column in self.model.columns} for row in feature_rows]
        return outcomes(self.model.probabilities, own)

    def card(self):
        """What /model says of it."""
        if self.model is None:
            return {"folder": str(self.directory), "refused": self.refused}
        return {
            "folder": str(self.directory),
            "model_version": self.model.version,
            "features": self.model.columns,
            "calls": self.model.path,
        } | ({"failing": self.failing} if self.failing else {})


def load_challenger(directory, running, max_string_chars, fast=True):
    if not (directory / "pipeline.pickle").exists():
        return None
    try:
        challenger = load(directory, max_string_chars, fast)
    except artifacts.ArtifactError as exc:
        return refuse(directory, f"its files are not a model this service can load: {exc}")
    probes = [
        row for row, proba in zip(*probed(running, probe_rows(running)), strict=True) if proba is not None
    ]
    challenger.role = "challenger"
    why = incompatibility(challenger, running, probes)
    if why:
        return refuse(directory, why)
    log.info(
        "challenger %s scores every prediction in shadow; its answers are stored, never returned",
        challenger.version,
    )
    failing = probe_failures(challenger, probes)
    if failing:
        log.warning("challenger %s %s: those rows are stored without its answer", challenger.version, failing)
    return Challenger(directory, challenger, failing=failing)


def refuse(directory, why):
    log.error("the challenger in %s is refused, and scores nothing: %s", directory, why)
    return Challenger(directory, None, refused=why)


def probed(model, rows):
    """(the rows, each one's probability from the model or None where it fails). The extreme
    numbers overflow where a model casts to float32, and numpy warns: the failure says enough."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return rows, outcomes(model.probabilities, rows)


def incompatibility(challenger, running, probes):
    """Why the challenger can't take every request the running model takes, or None: other
    classes, a feature the requests don't carry, a value of the probe rows its schema refuses."""
    classes, running_classes = challenger.pipeline.classes_.tolist(), running.pipeline.classes_.tolist()
    if classes != running_classes:
        return (
            f"its classes are {classes}, the running model's {running_classes}; train it on the same labels"
        )
    lacking = [column for column in challenger.columns if column not in running.columns]
    if lacking:
        return f"it needs features the requests don't carry: {', '.join(lacking)}"
    for row in probes:
        for column in challenger.columns:
            if valid(challenger, column, row[column], KeyError) is KeyError:
                return f"its feature {column} refuses {row[column]!r}, which the running model takes"
    return None


def probe_failures(challenger, probes):
    """What the challenger fails to score among the probe rows the running model scores, or None."""
    rows = [{column: row[column] for column in challenger.columns} for row in probes]
    failed = [row for row, proba in zip(*probed(challenger, rows), strict=True) if proba is None]
    if not failed:
        return None
    return f"fails on {len(failed)} of {len(rows)} probe rows the running model scores, such as {failed[0]}"


def describe_path(path):
    if path["serves"] == "fast path":
        return (
            f"the fast path (agreed with predict_proba on {path['probes']} probe rows, "
            f"largest difference {path['largest_difference']:.3g})"
        )
    return f"scikit-learn's predict_proba ({path['why']})"


def choose_path(model, fast):
    """(the FastPath or None, how the model is called and why)."""
    if not fast:
        return None, {"serves": "scikit-learn", "why": "the fast path is off (FAST_PATH=0)"}
    try:
        candidate = fast_path.build(model.pipeline, model.schema.kinds)
    except fast_path.NotCovered as exc:
        return None, {"serves": "scikit-learn", "why": f"the fast path does not cover {exc}"}
    rows = probe_rows(model)
    disagreement, largest = compare(model, candidate, rows)
    if disagreement:
        why = f"the fast path disagreed with predict_proba: {disagreement}"
        return None, {"serves": "scikit-learn", "why": why}
    return candidate, {"serves": "fast path", "probes": len(rows), "largest_difference": largest}


# Checking the fast path against predict_proba.
def compare(model, candidate, rows):
    """(what disagreed, or None; the largest difference between the two on the probe rows).

    Only the rows the fast path answers are asked of predict_proba (in one call, unless it
    refuses one): those it leaves alone go to predict_proba at run time too."""
    answered = [(row, got) for row, got in zip(rows, outcomes(candidate.probabilities, rows), strict=True)]
    answered = [(row, got) for row, got in answered if got is not None]
    expected = outcomes(lambda part: scikit_learn(model, part), [row for row, _ in answered])
    largest = 0.0
    for (row, got), want in zip(answered, expected, strict=True):
        if want is None:
            return f"scikit-learn refuses {row} but the fast path answered {got}", largest
        largest = max(largest, abs(want - got))
        if not abs(want - got) <= TOLERANCE:
            return f"{got} where scikit-learn gives {want} for {row}", largest
    return None, largest


def scikit_learn(model, feature_rows):
    return model.pipeline.predict_proba(model.schema.frame(feature_rows))[:, 1]


def outcomes(call, rows):
    """Each row's probability, or None where `call` refuses the row (found by halving)."""
    try:
        return [float(p) for p in call(rows)]
    except Exception:
        if len(rows) == 1:
            return [None]
    middle = len(rows) // 2
    return outcomes(call, rows[:middle]) + outcomes(call, rows[middle:])


def probe_rows(model):
    """Rows that take every path through the pipeline, each valid for /predict."""
    categories = model_card.categories_seen(model.pipeline)
    values = {column: probe_values(model, column, categories.get(column, ())) for column in model.columns}
    base = typical_row(model, values)
    rows = [base, {column: None for column in model.columns}]
    rows += [{**base, column: value} for column in model.columns for value in values[column]]
    pick = random.Random(0)
    rows += [{column: pick.choice(values[column]) for column in model.columns} for _ in range(MIXED_PROBES)]
    return rows


def typical_row(model, values):
    if model.profile is not None:
        typical = model.profile.typical_observation()
        return {column: valid(model, column, typical.get(column), None) for column in model.columns}
    return {column: values[column][0] for column in model.columns}


def valid(model, column, value, otherwise):
    try:
        return model.schema.checked_feature(column, value)
    except ApiError:
        return otherwise


def probe_values(model, column, encoded):
    """The feature's values to probe with: missing, training's categories and an unseen one, the
    profile's bin edges and typical value, extreme numbers; only those /predict accepts."""
    kind = model.schema.kinds[column]
    candidates = [None, *model.schema.categories.get(column, ()), *encoded]
    if kind in ("string", "string or number"):
        candidates += ["a value never seen in training", ""]
    if kind in ("integer", "string or number"):
        candidates += EXTREME_INTEGERS
    if kind in ("number", "string or number"):
        candidates += EXTREME_NUMBERS
    if kind == "boolean":
        candidates += [False, True]
    candidates += profile_values(model.profile, column)
    found = []
    for value in candidates:
        checked = valid(model, column, value, KeyError)
        if checked is not KeyError and not any(same(checked, seen) for seen in found):
            found.append(checked)
    return found


def same(a, b):
    return type(a) is type(b) and (a == b or (a != a and b != b))


def profile_values(profile, column):
    if profile is None:
        return []
    for spec in profile.document["features"]:
        if spec["name"] == column:
            edges = spec.get("edges", [])
            middles = [(low + high) / 2 for low, high in zip(edges[:-1], edges[1:], strict=True)]
            return [spec.get("typical"), *edges, *middles, *spec.get("seen", []), *spec.get("values", [])]
    return []
