"""The exact probabilities of the labelled rows in a few bins, for an exact ROC AUC.

Contract:
- `add_exact_probas(database, table, histograms, first_hour, target, most_rows, exact_up_to_rows,
  rows_outside_window, archived)` reads, through the index on the labelled rows' proba, the rows of the
  bins that leave ROC AUC's max_error above `target` and records their probas in the histograms'
  `exact`; see its docstring for the bounds on what it reads.
Reads the predictions table, never writes.
"""

from service.monitoring.histogram import Histogram
from service.monitoring.periods import FINE_BINS, SQLITE, dialect_of, hour_start


def add_exact_probas(
    database,
    table,
    histograms,
    first_hour,
    target,
    most_rows,
    exact_up_to_rows,
    rows_outside_window=0,
    archived=False,
):
    """Read the rows of the bins that leave ROC AUC's max_error above `target` (in any of
    `histograms`, {model_version: Histogram}, or in all of them together), worst bins first and at
    most `most_rows` rows in all, through the index on the labelled rows' proba. When reading
    every bin that leaves any doubt passes over `exact_up_to_rows` rows or fewer, read them all:
    exact. `rows_outside_window`, the labelled rows before first_hour, are in the index too, so
    reading a bin passes over its share of them (taken as spread evenly over the bins). With
    `archived`, the archived predictions' rows are read too: the bins count them."""
    overall = Histogram()
    for histogram in histograms.values():
        overall.merge(histogram)
    in_index = overall.positives + overall.negatives + rows_outside_window / FINE_BINS  # per bin
    if in_index[overall.unknown_pairs() > 0].sum() <= exact_up_to_rows:
        target = 0.0
    wanted = dict.fromkeys(overall.worst_bins(target))
    for histogram in histograms.values():
        wanted.update(dict.fromkeys(histogram.worst_bins(target)))
    unknown, chosen, rows_read = overall.unknown_pairs(), set(), 0
    for bin in sorted(wanted, key=lambda bin: -unknown[bin]):
        rows_read += in_index[bin]
        if rows_read > most_rows:
            break
        chosen.add(bin)
    runs = spans(sorted(chosen), in_index)
    for source in (table, "archived_prediction") if archived else (table,):
        # Within a table, a row on the edge of two runs comes once per run: the last one counts.
        found = {}
        for version, bin, proba, pos, neg in rows_of_bins(database, source, runs, first_hour):
            if int(bin) in chosen:  # a run's edges may take in rows of its neighbours
                found[version, int(bin), proba] = (int(pos), int(neg))
        for (version, bin, proba), (pos, neg) in found.items():
            counts = histograms[version].exact.setdefault(bin, {}).setdefault(proba, [0, 0])
            counts[0] += pos
            counts[1] += neg


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
