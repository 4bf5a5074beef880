"""The exact probabilities of the labelled rows in a few bins, for an exact ROC AUC.

Contract:
- `exact_probas(database, table, histograms, first_hour, budget, rows_before_window,
  with_archive)` reads, through the index on the labelled rows' proba, the rows of the bins that
  leave ROC AUC's max_error above the `Budget`'s, and returns their probas, per model version and
  bin, for each histogram's `exact`; its docstring gives the bounds on what it reads.
Reads the predictions table, never writes.
"""

from dataclasses import dataclass

from service.monitoring.histogram import Histogram
from service.monitoring.periods import FINE_BINS, SQLITE, dialect_of, hour_start


@dataclass(frozen=True)
class Budget:
    """How much reading exact probabilities may cost a /stats call."""

    max_error: float  # read the bins that would leave ROC AUC less sure than this
    most_rows: int  # ... but never more rows than this per call
    read_all_up_to: int  # and when the doubtful bins' rows are no more than this, read them all


def exact_probas(database, table, histograms, first_hour, budget, rows_before_window=0, with_archive=False):
    """{model_version: {bin: {proba: [positives, negatives]}}}: the exact probabilities of the bins
    that leave ROC AUC's max_error above the budget's (in any of `histograms`, {model_version:
    Histogram}, or in all of them together), worst bins first and at most `budget.most_rows` rows
    in all, read through the index on the labelled rows' proba. When every bin that leaves any
    doubt passes over `budget.read_all_up_to` rows or fewer, all of them: exact.
    `rows_before_window`, the labelled rows before first_hour, are in the index too, so reading a
    bin passes over its share of them (taken as spread evenly over the bins). `with_archive`: the
    archived predictions' rows are read too (the bins count them). The histograms are unchanged."""
    overall = Histogram()
    for histogram in histograms.values():
        overall.merge(histogram)
    in_index = overall.positives + overall.negatives + rows_before_window / FINE_BINS  # per bin
    target = budget.max_error
    if in_index[overall.unknown_pairs() > 0].sum() <= budget.read_all_up_to:
        target = 0.0
    wanted = dict.fromkeys(overall.worst_bins(target))
    for histogram in histograms.values():
        wanted.update(dict.fromkeys(histogram.worst_bins(target)))
    unknown, chosen, rows_read = overall.unknown_pairs(), set(), 0
    for bin in sorted(wanted, key=lambda bin: -unknown[bin]):
        rows_read += in_index[bin]
        if rows_read > budget.most_rows:
            break
        chosen.add(bin)
    runs = spans(sorted(chosen), in_index)
    exact = {}
    for source in (table, "archived_prediction") if with_archive else (table,):
        # Within a table, a row on the edge of two runs comes once per run: the last one counts.
        found = {}
        for version, bin, proba, pos, neg in rows_of_bins(database, source, runs, first_hour):
            if int(bin) in chosen:  # a run's edges may take in rows of its neighbours
                found[version, int(bin), proba] = (int(pos), int(neg))
        for (version, bin, proba), (pos, neg) in found.items():
            counts = exact.setdefault(version, {}).setdefault(bin, {}).setdefault(proba, [0, 0])
            counts[0] += pos
            counts[1] += neg
    return exact


SPAN_GAP_ROWS = 50  # rows between two wanted bins that cost less to read than one more range (roughly)


def spans(bins, rows_in):
    """The sorted bins as (first, last) runs, two bins in one run when the rows between them (as
    the index holds them, rows_in per bin) are fewer than SPAN_GAP_ROWS."""
    runs = []
    for bin in bins:
        if runs and rows_in[runs[-1][1] + 1 : bin].sum() < SPAN_GAP_ROWS:
            runs[-1][1] = bin
        else:
            runs.append([bin, bin])
    return [tuple(run) for run in runs]


RUNS_PER_QUERY = 400  # each run is two parameters


def rows_of_bins(database, table, runs, first_hour):
    """(model_version, bin, proba, positives, negatives) of the labelled rows in the runs of bins
    (first, last): one query per RUNS_PER_QUERY runs, each run a range of the index on proba, so
    scattered bins cost one round trip, not one each. A row on the edge of two runs comes once per
    run, with the same counts."""
    found = []
    for start in range(0, len(runs), RUNS_PER_QUERY):
        found += rows_of_runs(database, table, runs[start : start + RUNS_PER_QUERY], first_hour)
    return found


def rows_of_runs(database, table, runs, first_hour):
    dialect, param = dialect_of(database), database.param
    window = "" if first_hour is None else f"AND r.created_at >= {param}"
    real = f"CAST({param} AS DOUBLE PRECISION)"  # as proba is, so its index serves the join
    ranges = ", ".join([f"(CAST({param} AS INTEGER), {real}, {real})"] * len(runs))
    in_run = "r.proba >= runs.low AND r.proba < runs.high AND r.true_class IS NOT NULL"
    if dialect is SQLITE:  # which searches the index on proba once per run
        rows = f"runs JOIN {table} AS r ON {in_run}"
    else:  # PostgreSQL may instead test every row of the window against every run, or AND the
        # window's index into each run's search: OFFSET 0 keeps the subquery to the index on proba
        rows = f"runs CROSS JOIN LATERAL (SELECT * FROM {table} AS r WHERE {in_run} OFFSET 0) AS r"
    query = f"""WITH runs (run, low, high) AS (VALUES {ranges})
                SELECT r.model_version, {dialect.fine_bin}, r.proba,
                       SUM(CASE WHEN r.true_class = 1 THEN 1 ELSE 0 END),
                       SUM(CASE WHEN r.true_class = 1 THEN 0 ELSE 1 END)
                FROM {rows} WHERE true {window}
                GROUP BY runs.run, r.model_version, r.proba"""
    params = [
        value
        for run, (first, last) in enumerate(runs)
        # a hundredth of a bin wider each side than the run, for rounding at its edges; the bin decides
        for value in (run, (first - 0.01) / FINE_BINS, (last + 1.01) / FINE_BINS)
    ]
    params += [] if first_hour is None else [hour_start(first_hour)]
    return database.execute_sql(query, params).fetchall() if runs else []
