"""Drift before the labels come: each feature of the people scored against the training profile.

Contract:
- `Profiles(database, model_version, from_file, why_none)`: the running version's training
  profile (profile.py). `store(database)` writes the file's to the database unless one is stored
  for the version already (the first one stored stays, so that all its rows are binned alike);
  app.py calls it at start-up, once per instance, and the release command after its upgrade, so
  instances starting together write it once. `running()` only reads: the stored profile (without
  a file, one stored by an earlier deploy of the version), else None (`why_none` says why).
  `codes(feature_rows)` is what /predict stores in feature_bins (None per row without a
  profile): /predict's path writes nothing but its predictions.
- `drift_report(database, hours, now)`: GET /drift. Per model version with
  predictions in the window (the hour, or past 48 hours the day, that holds `now - hours`; the
  whole history when None): the rows it rests on (those with feature bins), and per feature, worst
  first, the population stability index against training (profile.psi), the share missing and
  the share never seen in training, each bin's share in training and now, and the bins that moved
  most. A feature is `drifted` when its PSI reaches PSI_DRIFTED and three times what chance alone
  gives at this many rows, `psi_by_chance` ((bins - 1) * (1/rows + 1/training rows)), and the
  window holds MIN_ROWS rows; under that `too_few_rows` says so. The probabilities get the same
  comparison with the test set's, and their expected ROC AUC (population.py). Reads running
  counts only (population.py), in one snapshot: its cost depends on the window, not the table.
"""

import logging
import math
import time

from service import database as databases
from service.monitoring import population, windows
from service.monitoring.periods import HOURLY_WINDOWS_UP_TO, start_time, window_start
from service.monitoring.profile import HOW_TO_MAKE, PROBA_BINS, Profile, decode, psi
from service.timestamps import iso_utc

log = logging.getLogger(__name__)

PSI_DRIFTED = 0.25  # the usual reading: under 0.1 stable, 0.1 to 0.25 worth a look, above a shift
MIN_ROWS = 100
MOVED_SHOWN = 3
LOOK_AGAIN_SECONDS = 10


class Profiles:
    def __init__(self, database, model_version, from_file, why_none):
        self.database, self.model_version = database, model_version
        self.from_file, self.why_none = from_file, why_none
        self.stored, self.next_look = None, 0.0

    def store(self, database):
        """The file's profile written for the version, unless one is stored already (then kept)."""
        if self.from_file is None:
            return
        try:
            with database.connection_context():
                document = population.store_profile(database, self.model_version, self.from_file.document)
        except databases.EXCEPTIONS as exc:
            if databases.classify(exc).kind != "refused":
                raise
            log.warning(
                "the database refuses writes (%s): the training profile of model version %s is "
                "stored at the next start or release, and predictions are stored without feature "
                "bins until then",
                databases.classify(exc).cause,
                self.model_version,
            )
            return
        if document != self.from_file.document:
            log.warning(
                "training_profile.json differs from the profile stored for model version %s; "
                "drift goes on against the stored one, so that all of the version's rows compare alike",
                self.model_version,
            )

    def running(self):
        """The stored profile. Read once; while the file's is not stored yet (a worker that started
        before the release stored it), read again at most every LOOK_AGAIN_SECONDS."""
        if self.stored is None and time.monotonic() >= self.next_look:
            document = population.profiles(self.database).get(self.model_version)
            self.stored = document and Profile(document)
            waiting = self.stored is None and self.from_file is not None
            self.next_look = time.monotonic() + LOOK_AGAIN_SECONDS if waiting else math.inf
        return self.stored

    def codes(self, feature_rows):
        profile = self.running()
        return profile.codes(feature_rows) if profile else [None] * len(feature_rows)


def drift_report(database, hours, now):
    first_hour = None if hours is None else window_start(hours, now)
    level, first = population.window_level(first_hour, hours is not None and hours > HOURLY_WINDOWS_UP_TO)
    with windows.snapshot(database):
        features = population.feature_counts(database, level, first)
        probas = population.proba_counts(database, level, first)
        documents = population.profiles(database)
    versions = {
        version: version_drift(documents.get(version), features.get(version, {}), bins)
        for version, bins in sorted(probas.items())
        if bins.predictions()
    }
    report = {
        "window_hours": hours,
        "since": None if first_hour is None else start_time(first_hour),
        "as_of": iso_utc(now),
        "by_model_version": versions,
    }
    if not versions:
        window = "yet" if hours is None else f"in the last {hours:g} hours"
        report["message"] = f"no predictions {window}: nothing to compare with training"
    return report


def version_drift(document, counts, probas):
    predictions = probas.predictions()
    found = {"predictions": predictions, "expected_roc_auc": rounded(probas.expected_roc_auc())}
    if document is None:
        return found | {"rows": 0, "message": f"no training profile for this version: {HOW_TO_MAKE}"}
    profile = Profile(document)
    rows = sum(counts.get(1, {}).values())
    found |= {"rows": rows, "training_rows": document["training_rows"], "too_few_rows": rows < MIN_ROWS}
    if rows < predictions:
        found["message"] = (
            f"{predictions - rows} of the window's predictions were stored without feature bins (before "
            "the version's profile was, or while it was missing): drift rests on the others"
        )
    features = [
        feature_drift(feature, counts.get(position, {}), rows, document["training_rows"])
        for position, feature in enumerate(profile.features, start=1)
        if rows
    ]
    features.sort(key=lambda feature: -feature["psi"])
    return found | {
        "drifted": [feature["name"] for feature in features if feature["drifted"]],
        "features": features,
        "probabilities": probability_drift(probas, profile.test),
    }


def feature_drift(feature, codes, rows, training_rows):
    counts, unseen = [0] * len(feature.training), 0
    for code, count in codes.items():
        index, never_seen = decode(code)
        counts[index] += count
        unseen += count * never_seen
    value = psi(feature.training, counts)
    used = sum(1 for share, count in zip(feature.training, counts, strict=True) if share or count)
    by_chance = max(used - 1, 1) * (1 / rows + 1 / training_rows)
    now = [count / rows for count in counts]
    moved = sorted(range(len(now)), key=lambda i: -abs(now[i] - feature.training[i]))[:MOVED_SHOWN]
    labels = feature.labels()
    knows_seen = feature.kind == "deciles" or feature.rarer_seen is not None
    return {
        "name": feature.name,
        "psi": value,
        "psi_by_chance": rounded(by_chance),
        "drifted": rows >= MIN_ROWS and value >= max(PSI_DRIFTED, 3 * by_chance),
        "missing": rounded(now[-1]),
        "training_missing": feature.training[-1],
        "unseen": rounded(unseen / rows) if knows_seen else None,
        "moved_most": [labels[i] for i in moved if now[i] != feature.training[i]],
        "bins": [
            {"bin": label, "training": share, "now": rounded(part)}
            for label, share, part in zip(labels, feature.training, now, strict=True)
        ],
    }


def probability_drift(probas, test):
    """The window's probabilities against the test set's: PSI over PROBA_BINS bins, and means."""
    per_bin = population.PROBA_BINS // PROBA_BINS
    counts = probas.values[0].reshape(PROBA_BINS, per_bin).sum(axis=1).round().tolist()
    return {
        "psi": psi(test["proba_shares"], counts),
        "mean_proba": rounded(probas.values[1].sum() / probas.predictions()),
        "test_mean_proba": test["mean_proba"],
        "test_roc_auc": test["roc_auc"],
    }


def rounded(value):
    return None if value is None else round(float(value), 6)
