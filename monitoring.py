"""What is running and how well it does: the bodies of GET /model and GET /stats.

Contract:
- `model_card(pipeline, schema, labels, pipeline_sha256, training_meta)`: the features, their
  training dtypes, the JSON type each accepts and the categories seen in training; the classes,
  the positive one (whose probability /predict answers) and what /update takes for each; the
  model's hash and version; the library versions running and those that trained it.
- `stats_report(database, prediction_model, hours, now)`: predictions served and labelled since
  `now - hours` (the whole history when hours is None), overall and per model_version, and on
  the labelled ones ROC AUC, log loss, Brier score and the predicted vs observed positive rate.
  Everything is aggregated in the database, in one pass over the labelled rows.
- `quality_metrics(...)`: the metrics from the sums that pass computes; pure arithmetic.

Nothing here writes to the database.
"""

from datetime import timedelta
from importlib.metadata import version

from peewee import fn

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
            package: {"running": version(package), "trained_with": training_meta.get(package)}
            for package in CHECKED_PACKAGES
        },
    }


# Live quality: how the model does on the predictions whose true class has arrived.
QUALITY_SQL = """
WITH keyed AS (
    SELECT {key} AS key, proba, true_class,
           CASE WHEN proba < 1e-15 THEN 1e-15 WHEN proba > 1 - 1e-15 THEN 1 - 1e-15 ELSE proba END AS clipped
    FROM prediction
    WHERE true_class IS NOT NULL {window}
), ranked AS (
    SELECT *, RANK() OVER (PARTITION BY key ORDER BY proba) AS low_rank,
              COUNT(*) OVER (PARTITION BY key, proba) AS ties
    FROM keyed
)
SELECT key, COUNT(*), SUM(true_class), AVG(proba), AVG((proba - true_class) * (proba - true_class)),
       -AVG(CASE WHEN true_class = 1 THEN LN(clipped) ELSE LN(1 - clipped) END),
       SUM(CASE WHEN true_class = 1 THEN low_rank + (ties - 1) / 2.0 ELSE 0 END)
FROM ranked GROUP BY key
"""


def quality(database, since, by_model_version):
    """{model_version (or "" for all of them): metrics} for labelled predictions made since `since`
    (all of them when `since` is None, including the tutorial's rows, which have no created_at)."""
    window = "" if since is None else f"AND created_at >= {database.param}"
    sql = QUALITY_SQL.format(key="model_version" if by_model_version else "''", window=window)
    params = () if since is None else (since,)
    return {row[0]: quality_metrics(*row[1:]) for row in database.execute_sql(sql, params).fetchall()}


def quality_metrics(labelled, positives, mean_proba, brier, log_loss, positive_rank_sum):
    """ROC AUC from the rank sum of the positives (Mann-Whitney), ties counted as half."""
    negatives = labelled - positives
    auc = None
    if positives and negatives:
        auc = (float(positive_rank_sum) - positives * (positives + 1) / 2) / (positives * negatives)
    return {
        "labelled": labelled,
        "roc_auc": rounded(auc),
        "log_loss": rounded(log_loss),
        "brier_score": rounded(brier),
        "predicted_positive_rate": rounded(mean_proba),
        "observed_positive_rate": rounded(positives / labelled),
    }


def rounded(value):
    return None if value is None else round(float(value), 6)


def served(prediction_model, since):
    """{model_version: (predictions, labelled)} since `since` (None: all of them)."""
    query = (
        prediction_model.select(
            prediction_model.model_version,
            fn.COUNT(prediction_model.id),
            fn.COUNT(prediction_model.true_class),
        )
        .where(True if since is None else prediction_model.created_at >= since)
        .group_by(prediction_model.model_version)
    )
    return {version: (total, labelled) for version, total, labelled in query.tuples()}


def stats_report(database, prediction_model, hours, now):
    since = None if hours is None else now - timedelta(hours=hours)
    counts = served(prediction_model, since)
    by_version = quality(database, since, by_model_version=True)
    [overall] = quality(database, since, by_model_version=False).values() or [None]

    def summary(predictions, labelled, metrics):
        return {"predictions": predictions, **(metrics or {"labelled": labelled})}

    return {
        "window_hours": hours,
        "overall": summary(sum(t for t, _ in counts.values()), sum(n for _, n in counts.values()), overall),
        "by_model_version": {
            version: summary(total, labelled, by_version.get(version))
            for version, (total, labelled) in sorted(counts.items())
        },
    }
