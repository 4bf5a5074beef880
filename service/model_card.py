"""GET /model's body: what is running, described from the model's own files.

Contract:
- `model_card(pipeline, schema, labels, pipeline_sha256, training_meta, warnings, profile,
  no_profile, calls)`: the features, their training dtypes, the JSON type each accepts, the categories
  seen in training and, from the training profile, a typical value; the classes, the positive
  one (whose probability /predict answers) and what /update takes for each; the model's hash
  and version; the library versions running and those that trained it; the training profile's
  rows and test ROC AUC, or why there is none (`no_profile`); how the model is called (`calls`,
  model.py: the fast path or scikit-learn, and why).
- `categories_seen(estimator)`: {column: categories} learnt by every fitted encoder in a pipeline.
- `example_observation(features, row=None)`: the one rule for a valid example observation, from
  the card's features: the row's value where it has one, else the feature's typical value in
  training, else the first category seen in training, else a plain value of its JSON type. The
  owner's page, /openapi.json, the model check and the tests all build their examples with it.
"""

from importlib.metadata import version as installed_version

from service.artifacts import CHECKED_PACKAGES


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


def model_card(
    pipeline,
    schema,
    labels,
    pipeline_sha256,
    training_meta,
    warnings=(),
    profile=None,
    no_profile=None,
    calls=None,
):
    # A category column takes exactly its dtype's categories; an encoder's are what it learnt.
    categories = categories_seen(pipeline) | schema.categories
    typical = profile.typical_observation() if profile else {}
    return {
        "model_version": pipeline_sha256[:12],
        "pipeline_sha256": pipeline_sha256,
        "classes": [labels.negative, labels.positive],
        "positive_class": labels.positive,
        "true_class_accepts": labels.describe(),
        "features": [
            {"name": column, "dtype": str(dtype), "accepts": schema.kinds[column]}
            | ({"categories": categories[column]} if column in categories else {})
            | ({"typical": typical[column]} if column in typical else {})
            for column, dtype in schema.dtypes.items()
        ],
        "training_profile": training_profile(profile, no_profile),
        "calls": calls or {},
        "versions": {
            package: {"running": installed_version(package), "trained_with": training_meta.get(package)}
            for package in CHECKED_PACKAGES
        },
    } | ({"warnings": list(warnings)} if warnings else {})


PLACEHOLDERS = {
    "number": 0.0,
    "integer": 0,
    "boolean": False,
    "string": "example",
    "string or number": "example",
}


def training_profile(profile, no_profile):
    """What the reference for /drift rests on, or what to do to have one."""
    if profile is None:
        return {"missing": no_profile}
    document = profile.document
    test = document["test"]
    return {
        "training_rows": document["training_rows"],
        "test_rows": test["rows"],
        "test_roc_auc": test["roc_auc"],
    }


def example_observation(features, row=None):
    row = row or {}
    return {
        feature["name"]: row[feature["name"]] if feature["name"] in row else example_value(feature)
        for feature in features
    }


def example_value(feature):
    if "typical" in feature:
        return feature["typical"]
    return (feature.get("categories") or [PLACEHOLDERS.get(feature["accepts"], "example")])[0]
