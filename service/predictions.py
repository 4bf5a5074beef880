"""Scoring and storing /predict's observations, a batch at a time.

Contract:
- `Predictor(model, prediction_model, episodes, feature_bins, challenger=None)`, for a model.Model
  and a model.Challenger (or None; one refused scores nothing):
  - `predict_batch(observations)`: one response body or ApiError per observation, in order. The
    batch is scored in one call of the model; a row the model refuses becomes a 422 naming the
    features to blame, at the cost of about log2(batch) extra calls, and its neighbours are
    still scored. The scored rows are stored in one INSERT, which commits by itself: each answer
    leaves only once its row is committed. Each row carries its features' bins in the training
    profile (`feature_bins(feature_rows)`, monitoring/drift.py), which the drift counts read. A
    taken id is left alone (ON CONFLICT DO NOTHING) and answered from the row the database kept:
    the stored proba for a retry of the same observation, a 409 for another one. So retries and
    races across workers and instances stay correct without catching IntegrityError.
  - With a challenger, each stored row also carries its probability (`challenger_proba`, NULL
    where it failed on the row) and version (`challenger_version`), in the same INSERT: a row and
    its challenger's answer are stored together or not at all, and the answer never leaves. A
    failing challenger changes nothing else: the row is stored and answered as without one.
batching.py hands it the requests that arrive together; app.py builds it from the model's files.
"""

import functools
import logging

from peewee import quote

from service import metrics, schema
from service.errors import ApiError
from service.timestamps import utc_now

log = logging.getLogger(__name__)


class Predictor:
    def __init__(self, model, prediction_model, episodes, feature_bins, challenger=None):
        self.scorer = model
        self.challenger = challenger if challenger is not None and challenger.serves else None
        self.feature_bins = feature_bins
        self.schema = model.schema
        self.model = prediction_model
        self.model_version = model.version
        self.episodes = episodes  # database.Episodes: told when a write succeeds

    def score(self, observations):
        """One proba per observation, or an ApiError for each row the model can't score."""
        try:
            return self.scorer.probabilities([obs.features for obs in observations])
        except Exception as exc:
            if len(observations) == 1:
                error = schema.unscorable(observations[0].features, exc, self.scorer.accepts)
                log.warning(
                    "the model could not score observation %s: %s", observations[0].observation_id, error
                )
                return [error]
        # The model refused the batch: score each half on its own, so that one bad row costs its
        # good neighbours about log2(batch) extra calls instead of one call each.
        middle = len(observations) // 2
        return self.score(observations[:middle]) + self.score(observations[middle:])

    def store(self, scored):
        """Insert the scored observations in one statement; {id: (observation, proba)} as stored."""
        now = utc_now()
        feature_rows = [obs.features for obs, _ in scored]
        bins = self.feature_bins(feature_rows)
        rows = [
            {
                "observation_id": obs.observation_id,
                "observation": obs.stored_form,
                "proba": proba,
                "model_version": self.model_version,
                "created_at": now,
                "updated_at": now,
                "feature_bins": codes,
            }
            for (obs, proba), codes in zip(scored, bins, strict=True)
        ]
        if self.challenger is not None:
            self.add_challenger_answers(rows, feature_rows)
        # In id order: two inserts that share ids then wait for each other in the same order, never
        # in a circle (PostgreSQL aborts one of a circle as a deadlock, which would surface as a 503).
        rows.sort(key=lambda row: row["observation_id"])
        inserted = self.insert(rows)
        self.episodes.record_success()
        metrics.PREDICTIONS.labels(self.model_version).inc(inserted)
        if inserted == len(rows):  # the usual case: every id was new, and what we wrote is stored
            return {row["observation_id"]: (row["observation"], row["proba"]) for row in rows}
        ids = [row["observation_id"] for row in rows]
        model = self.model
        kept = model.select(model.observation_id, model.observation, model.proba)
        return {row[0]: row[1:] for row in kept.where(model.observation_id.in_(ids)).tuples()}

    def add_challenger_answers(self, rows, feature_rows):
        shadow = self.challenger.probabilities(feature_rows)
        failed = sum(proba is None for proba in shadow)
        if failed:
            log.warning(
                "the challenger failed on %d of %d rows (stored without its answer)", failed, len(rows)
            )
        for row, proba in zip(rows, shadow, strict=True):
            row["challenger_proba"] = proba
            row["challenger_version"] = self.challenger.model.version

    def insert(self, rows):
        """INSERT ... ON CONFLICT DO NOTHING of the rows; how many were new. Its SQL is written once
        per number of rows: peewee building it for each batch cost about a tenth of a request."""
        fields = [self.model._meta.fields[name] for name in rows[0]]
        values = [field.db_value(row[field.name]) for row in rows for field in fields]
        cursor = self.model._meta.database.execute_sql(self.insert_sql(tuple(rows[0]), len(rows)), values)
        return cursor.rowcount

    @functools.lru_cache(maxsize=128)  # noqa: B019 (one Predictor per process, for its lifetime)
    def insert_sql(self, names, count):
        meta = self.model._meta
        columns = ", ".join(quote((meta.fields[name].column_name,), meta.database.quote) for name in names)
        row = "(" + ", ".join([meta.database.param] * len(names)) + ")"
        table = quote((meta.table_name,), meta.database.quote)
        return f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * count)} ON CONFLICT DO NOTHING"

    def answer(self, obs, stored):
        """The /predict response for an observation, given (observation, proba) stored under its id."""
        stored_observation, stored_proba = stored
        if not self.schema.stored_matches(stored_observation, obs):
            return ApiError(
                409,
                f"id {obs.observation_id} was already used for a different observation; "
                "use a new id (the stored prediction is unchanged)",
            )
        warnings = self.schema.warnings(obs)
        return {"proba": stored_proba, "warnings": warnings} if warnings else {"proba": stored_proba}

    def predict_batch(self, observations):
        metrics.BATCH_SIZES.observe(len(observations))
        results = self.score(observations)
        pairs = list(zip(observations, results, strict=True))
        scored = [(obs, proba) for obs, proba in pairs if not isinstance(proba, ApiError)]
        stored = self.store(scored) if scored else {}
        return [
            proba if isinstance(proba, ApiError) else self.answer(obs, stored[obs.observation_id])
            for obs, proba in pairs
        ]
