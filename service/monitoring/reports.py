"""Live quality: the bodies of GET /stats and /stats/series, and who may ask for them how often.

Contract:
- `stats_report(database, table, cache, hours, now)`: predictions served and labelled since the
  start of the hour holding `now - hours` (of the day, for windows over 48 hours; the whole
  history when hours is None), overall and per model_version; on the labelled ones ROC AUC (with
  the most it can be off, `roc_auc_max_error`: 0 when reading the doubtful bins passes over
  EXACT_BUDGET.read_all_up_to labelled rows or fewer (in a window, with the rows before it that
  share their bins), else at most 1e-4 unless that would take reading over EXACT_BUDGET.most_rows
  rows), log loss,
  Brier score, the predicted vs observed positive rate, the calibration table and the histogram
  of probabilities by true class; per model_version also when it took over and last served
  (`first_hour_served`, `last_hour_served`: hours, over the whole history).
- `series_report(database, cache, every, hours, now)`: the same figures (no tables) per hour or day.
- `comparison_report(database, hours, now)`: for each running model and challenger that
  scored the same predictions (model_version, challenger_version) in the window (whole hours,
  or whole days for windows over 48 hours, as the drift's), how many both scored, how many the
  challenger failed on, and the paired comparison (comparison.compare_counts) on the labelled
  ones, archived ones included, from pairs.py's running counts.
- `Monitor(database, table, settings)` answers them for the routes: callers that come at once
  share one computation per worker (coalescing.py), an answer is reused for
  STATS_MAX_AGE_SECONDS, and past a second's burst of MONITORING_PER_SECOND callers wait their
  turn, or get a 429 when 12 wait already, so a flood of them can't starve /predict. Each worker
  keeps up to STATS_CACHE_MB of periods read.
Each reads the running totals (tables.py, windows.py, population.py, pairs.py), never the
predictions themselves, in one snapshot, so their figures agree with each other and with the
rows at one moment, and cost about the same on ten rows or ten million. Nothing here writes to the database.
"""

import math

from service.coalescing import Coalescer, Pacer
from service.errors import ApiError
from service.monitoring import comparison, exact, pairs, population, windows
from service.monitoring.drift import drift_report
from service.monitoring.histogram import Histogram
from service.monitoring.periods import (
    COARSE_BINS,
    DAY,
    HOUR,
    HOURLY_WINDOWS_UP_TO,
    start_time,
    window_start,
)
from service.monitoring.population import ProbaBins
from service.timestamps import iso_utc

EXACT_BUDGET = exact.Budget(max_error=1e-4, most_rows=100_000, read_all_up_to=10_000)
CALIBRATION_BINS = 10
HISTOGRAM_BINS = 20


def stats_report(database, table, cache, hours, now):
    """/stats: served and labelled, and the quality of the labelled, since the start of the hour
    that holds `now - hours` (the whole history when hours is None), overall and per model_version."""
    first_hour = None if hours is None else window_start(hours, now)
    with windows.snapshot(database):
        # Hours one by one only where a window's edge may cut a day: days add up the rest.
        tables = windows.day_tables(database, None if first_hour is None else first_hour // 24)
        if first_hour is None:
            histograms = windows.whole_history_histograms(database, tables, cache)
        else:
            histograms = windows.histograms_since(database, first_hour, tables, cache)
        in_window = {version: by_hour.totals(first_hour) for version, by_hour in tables.items()}
        every_labelled = sum(by_hour.totals()["labelled"] for by_hour in tables.values())
        before_window = every_labelled - sum(sums["labelled"] for sums in in_window.values())
        archived = sum(by_hour.totals()["archived"] for by_hour in tables.values())
        level, first = population.window_level(first_hour, hours is not None and hours > HOURLY_WINDOWS_UP_TO)
        probas = population.proba_counts(database, level, first)
        tested = {
            version: profile["test"]["roc_auc"] for version, profile in population.profiles(database).items()
        }
        span = windows.served_hours(database)
        found = exact.exact_probas(
            database,
            table,
            histograms,
            first_hour,
            EXACT_BUDGET,
            rows_before_window=before_window,
            with_archive=archived > 0,
        )
    for version, bins in found.items():
        histograms[version].exact = bins
    served = {version: sums for version, sums in in_window.items() if sums["predictions"]}  # not all deleted
    overall, overall_probas = Histogram(), ProbaBins()
    for histogram in histograms.values():
        overall.merge(histogram)
    for bins in probas.values():
        overall_probas.merge(bins)
    return {
        "window_hours": hours,
        "since": None if first_hour is None else start_time(first_hour),
        "as_of": iso_utc(now),
        "overall": summary(combined(served.values()), overall, overall_probas),
        "by_model_version": {
            version: summary(
                served[version],
                histograms.get(version, Histogram()),
                probas.get(version, ProbaBins()),
                {"test_roc_auc": tested.get(version)} | served_between(span.get(version)),
            )
            for version in sorted(served)
        },
    }


def served_between(span):
    """When a version took over and when it last served: the start of the first and the last hour
    it served a prediction in, over the whole history (an empty dict when no row has a time)."""
    if span is None:
        return {}
    first, last = span
    return {"first_hour_served": start_time(first), "last_hour_served": start_time(last)}


def add_sums(into, sums):
    for name, value in sums.items():
        into[name] = into.get(name, 0) + value
    return into


def combined(many):
    total = {}
    for sums in many:
        add_sums(total, sums)
    return total


def summary(sums, histogram, probas, training=None, with_tables=True):
    """Counts and the quality to expect always; the realised quality once a prediction is labelled."""
    predictions, labelled = round(sums.get("predictions", 0)), round(sums.get("labelled", 0))
    found = {"predictions": predictions, "labelled": labelled}
    if sums.get("archived"):  # counted here, kept in an archive file, no longer in the table
        found["archived"] = round(sums["archived"])
    if predictions:  # if the probas are calibrated (docs/monitoring.md)
        found["expected_positive_rate"] = rounded(sums["sum_proba_all"] / predictions)
        found["expected_roc_auc"] = rounded(probas.expected_roc_auc())
    found |= training or {}
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


def series_report(database, cache, every, hours, now):
    """/stats/series: per model_version, one point per hour or day that had predictions, from the
    hour or day that holds `now - hours`; its ROC AUC comes from bins of 1/100 (max_error says
    how far that can be from the exact figure)."""
    every_day = every == "day"
    first = window_start(hours, now, every_day)
    with windows.snapshot(database):
        if every_day:  # the hours of each day added up in the database
            tables = windows.day_tables(database, first_hour=first * 24)
        else:
            tables = windows.hour_tables(database, first)
        histograms = windows.series_histograms(database, every_day, tables, cache)
        probas = population.proba_series(database, DAY if every_day else HOUR, first)
    totals = {
        (version, period): sums
        for version, by_hour in tables.items()
        for period, sums in by_hour.totals_by_period(24 if every_day else 1).items()
    }
    series = {}
    for version, period in sorted(key for key, sums in totals.items() if sums["predictions"]):
        histogram = histograms.get((version, period), Histogram(COARSE_BINS))
        bins = probas.get((version, period), ProbaBins())
        point = summary(totals[version, period], histogram, bins, with_tables=False)
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


def comparison_report(database, hours, now):
    """/compare: each running model against its challenger, on the predictions both scored."""
    first_hour = None if hours is None else window_start(hours, now)
    level, first = population.window_level(first_hour, hours is not None and hours > HOURLY_WINDOWS_UP_TO)
    with windows.snapshot(database):
        found = pairs.counts(database, level, first)
    return {
        "window_hours": hours,
        "since": None if first_hour is None else start_time(first_hour),
        "as_of": iso_utc(now),
        "comparisons": [versus(*versions, found[versions]) for versions in sorted(found)],
    }


def versus(running, challenger, counts):
    return {
        "model_version": running,
        "challenger_version": challenger,
        "scored": counts.scored,
        "challenger_failed": counts.failed,
    } | comparison.compare_counts(counts)


class Monitor:
    """The reports for the routes, computed once for the callers that come together, and paced."""

    def __init__(self, database, table, settings):
        self.database, self.table = database, table
        self.per_second = settings.MONITORING_PER_SECOND
        self.calls = Coalescer(settings.STATS_MAX_AGE_SECONDS)
        # A second's worth at once, then paced; at most three in four of a worker's threads wait
        # their turn, so that /predict always has threads left.
        most_waiting = max(1, settings.GUNICORN_THREADS * 3 // 4)
        self.pace = Pacer(self.per_second, burst=self.per_second, most_waiting=most_waiting)
        # A period of 10,000 cells is 480 kB: 32 MB holds a busy month's weeks, days and hours.
        self.cache = windows.PeriodCache(int(settings.STATS_CACHE_MB * 2**20))  # 0: read every cell

    def answers(self, now, *questions):
        """The answers to the questions, each ("stats", hours), ("drift", hours), ("comparison",
        hours) or ("series", every, hours), in order, computed in one turn of the pace; a 429 when
        no turn comes."""
        if not self.pace.wait_turn():
            limit = f"{self.per_second:g} a second per worker, MONITORING_PER_SECOND"
            raise ApiError(
                429,
                f"too many monitoring requests at once ({limit}); retry in a second",
                {"Retry-After": "1"},
            )
        return [self.calls.call(question, lambda q=question: self.report(q, now)) for question in questions]

    def report(self, question, now):
        if question[0] == "stats":
            return stats_report(self.database, self.table, self.cache, question[1], now)
        if question[0] == "drift":
            return drift_report(self.database, question[1], now)
        if question[0] == "comparison":
            return comparison_report(self.database, question[1], now)
        _, every, hours = question
        return series_report(self.database, self.cache, every, hours, now)
