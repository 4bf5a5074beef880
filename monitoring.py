"""What is running and how well it does: the bodies of GET /model, /stats and /stats/series.

Contract:
- `model_card(pipeline, schema, labels, pipeline_sha256, training_meta)`: the features, their
  training dtypes, the JSON type each accepts and the categories seen in training; the classes,
  the positive one (whose probability /predict answers) and what /update takes for each; the
  model's hash and version; the library versions running and those that trained it.
- `stats_report(database, table, hours, now)`: predictions served and labelled since the start
  of the hour holding `now - hours` (of the day, for windows over 48 hours; the whole history
  when hours is None), overall and per model_version; on the labelled ones ROC AUC (with the
  most it can be off, `roc_auc_max_error`: 0 when reading the doubtful bins passes over
  EXACT_UP_TO_ROWS labelled rows or fewer (in a window, with the rows before it that share their
  bins), else at most 1e-4 unless that would take reading over MOST_ROWS_READ rows), log
  loss, Brier score, the predicted vs observed positive rate, the calibration table and the
  histogram of probabilities by true class.
- `series_report(database, every, hours, now)`: the same figures (no tables) per hour or day.
Both read aggregates.py's running totals in one snapshot, so their figures agree with each other
and with the rows at one moment, and cost the same on ten rows or ten million. Nothing here
writes to the database.
"""

import math
from datetime import timedelta
from importlib.metadata import version as installed_version

import aggregates
from artifacts import CHECKED_PACKAGES


# The model card.
def categories_seen(estimator, columns=None):
    """{column: categories seen in training}, from every fitted encoder in the pipeline."""
    found = {}
    if hasattr(estimator, "transformers_"):  # a ColumnTransformer: each part names its columns
        for _, transformer, part_columns in estimator.transformers_:
            if isinstance(part_columns, list) and not isinstance(transformer, str):
                found.update(categories_seen(transformer, part_columns))
    elif hasattr(estimator, "steps"):  # a Pipeline
        for _, step in estimator.steps:
            found.update(categories_seen(step, columns))
    elif hasattr(estimator, "categories_"):
        names = getattr(estimator, "feature_names_in_", columns)
        if names is not None:
            for name, categories in zip(names, estimator.categories_, strict=True):
                found[str(name)] = [
                    value for value in categories.tolist() if isinstance(value, (str, int, float))
                ]
    return found


def model_card(pipeline, schema, labels, pipeline_sha256, training_meta):
    # A category column takes exactly its dtype's categories; an encoder's are what it learnt.
    categories = categories_seen(pipeline) | schema.categories
    return {
        "model_version": pipeline_sha256[:12],
        "pipeline_sha256": pipeline_sha256,
        "classes": [labels.negative, labels.positive],
        "positive_class": labels.positive,
        "true_class_accepts": labels.describe(),
        "features": [
            {"name": column, "dtype": str(dtype), "accepts": schema.kinds[column]}
            | ({"categories": categories[column]} if column in categories else {})
            for column, dtype in schema.dtypes.items()
        ],
        "versions": {
            package: {"running": installed_version(package), "trained_with": training_meta.get(package)}
            for package in CHECKED_PACKAGES
        },
    }


# Live quality: how the model does on the predictions whose true class has arrived, read from
# the running totals that aggregates.py keeps (never from the predictions themselves).
AUC_MAX_ERROR = 1e-4  # read exact probas for the bins that would leave ROC AUC less sure than this
MOST_ROWS_READ = 100_000  # ... but never more rows than this per call
EXACT_UP_TO_ROWS = 10_000  # and when reading the doubtful bins passes over no more, read them all
CALIBRATION_BINS = 10
HISTOGRAM_BINS = 20


HOURLY_WINDOWS_UP_TO = 48  # hours; a longer window starts at midnight UTC


def window_start(hours, now, every_day=False):
    """The first hour (or day) of a window: the one that holds `now - hours`, so a window of 24
    hours holds every row of the last 24 hours and at most one hour more. A window of over 48
    hours starts at the midnight (UTC) before, which makes it cheaper to read (fewer pieces)."""
    first_hour = max(0, math.floor((now - aggregates.EPOCH - timedelta(hours=hours)) / timedelta(hours=1)))
    if every_day:
        return first_hour // 24
    return first_hour if hours <= HOURLY_WINDOWS_UP_TO else first_hour // 24 * 24


def start_time(period, every_day=False):
    return iso_utc(aggregates.hour_start(period * (24 if every_day else 1)))


def iso_utc(timestamp):
    return timestamp.isoformat() + "Z"


def stats_report(database, table, hours, now):
    """/stats: served and labelled, and the quality of the labelled, since the start of the hour
    that holds `now - hours` (the whole history when hours is None), overall and per model_version."""
    first_hour = None if hours is None else window_start(hours, now)
    with aggregates.snapshot(database):
        # Hours one by one only where a window's edge may cut a day: days add up the rest.
        tables = aggregates.day_tables(database, None if first_hour is None else first_hour // 24)
        if first_hour is None:
            histograms = aggregates.whole_history_histograms(database, tables)
        else:
            histograms = aggregates.histograms_since(database, first_hour, tables)
        totals = {version: by_hour.totals(first_hour) for version, by_hour in tables.items()}
        every_labelled = sum(by_hour.totals()["labelled"] for by_hour in tables.values())
        outside = every_labelled - sum(sums["labelled"] for sums in totals.values())  # before the window
        aggregates.add_exact_probas(
            database, table, histograms, first_hour, AUC_MAX_ERROR, MOST_ROWS_READ, EXACT_UP_TO_ROWS, outside
        )
    totals = {version: sums for version, sums in totals.items() if sums["predictions"]}  # all deleted
    overall = aggregates.Histogram()
    for histogram in histograms.values():
        overall.merge(histogram)
    return {
        "window_hours": hours,
        "since": None if first_hour is None else start_time(first_hour),
        "as_of": iso_utc(now),
        "overall": summary(combined(totals.values()), overall),
        "by_model_version": {
            version: summary(totals[version], histograms.get(version, aggregates.Histogram()))
            for version in sorted(totals)
        },
    }


def add_sums(into, sums):
    for name, value in sums.items():
        into[name] = into.get(name, 0) + value
    return into


def combined(many):
    total = {}
    for sums in many:
        add_sums(total, sums)
    return total


def summary(sums, histogram, with_tables=True):
    """Counts always; the quality figures once a prediction is labelled."""
    predictions, labelled = round(sums.get("predictions", 0)), round(sums.get("labelled", 0))
    found = {"predictions": predictions, "labelled": labelled}
    if labelled:
        auc, max_error = histogram.roc_auc()
        found |= {
            "roc_auc": rounded(auc),
            "roc_auc_max_error": rounded_up(max_error),
            "log_loss": rounded(sums["sum_log_loss"] / labelled),
            "brier_score": rounded(sums["sum_squared_error"] / labelled),
            "predicted_positive_rate": rounded(sums["sum_proba"] / labelled),
            "observed_positive_rate": rounded(sums["positives"] / labelled),
        }
        if with_tables:
            found |= {"calibration": calibration(histogram), "histogram": distribution(histogram)}
    return found


def calibration(histogram):
    """The reliability table: per tenth of the proba range, the labelled predictions in it, their
    mean proba and how many were in fact positive."""
    table = []
    for group, (positives, negatives, sum_proba) in enumerate(
        zip(*histogram.rolled_up(CALIBRATION_BINS), strict=True)
    ):
        labelled = int(positives + negatives)
        table.append(
            {
                "from": group / CALIBRATION_BINS,
                "to": (group + 1) / CALIBRATION_BINS,
                "labelled": labelled,
                "mean_proba": rounded(sum_proba / labelled) if labelled else None,
                "observed_positive_rate": rounded(positives / labelled) if labelled else None,
            }
        )
    return table


def distribution(histogram):
    """How the labelled predictions' probas spread, per twentieth of the range and true class."""
    positives, negatives, _ = histogram.rolled_up(HISTOGRAM_BINS)
    return [
        {
            "from": group / HISTOGRAM_BINS,
            "to": (group + 1) / HISTOGRAM_BINS,
            "positives": int(positives[group]),
            "negatives": int(negatives[group]),
        }
        for group in range(HISTOGRAM_BINS)
    ]


MAX_SERIES_POINTS = 400


def series_report(database, every, hours, now):
    """/stats/series: per model_version, one point per hour or day that had predictions, from the
    hour or day that holds `now - hours`; its ROC AUC comes from bins of 1/100 (max_error says
    how far that can be from the exact figure)."""
    every_day = every == "day"
    first = window_start(hours, now, every_day)
    with aggregates.snapshot(database):
        if every_day:  # the hours of each day added up in the database
            tables = aggregates.day_tables(database, first_hour=first * 24)
        else:
            tables = aggregates.hour_tables(database, first)
        histograms = aggregates.series_histograms(database, every_day, tables)
    totals = {
        (version, period): sums
        for version, by_hour in tables.items()
        for period, sums in by_hour.totals_by_period(24 if every_day else 1).items()
    }
    series = {}
    for version, period in sorted(key for key, sums in totals.items() if sums["predictions"]):
        histogram = histograms.get((version, period), aggregates.Histogram(aggregates.COARSE_BINS))
        point = summary(totals[version, period], histogram, with_tables=False)
        mean_proba = (
            rounded(totals[version, period]["sum_proba_all"] / point["predictions"])
            if point["predictions"]
            else None
        )
        series.setdefault(version, []).append(
            {"start": start_time(period, every_day), **point, "mean_proba": mean_proba}
        )
    return {
        "every": every,
        "window_hours": hours,
        "since": start_time(first, every_day),
        "as_of": iso_utc(now),
        "by_model_version": series,
    }


def rounded_up(bound):
    """A bound shown with two significant digits, never below its value."""
    if not bound:
        return bound
    exponent = math.floor(math.log10(bound)) - 1
    return float(f"{math.ceil(round(bound / 10**exponent, 6))}e{exponent}")


def rounded(value):
    return None if value is None else round(float(value), 6)
