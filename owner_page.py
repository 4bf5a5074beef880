"""What the page at GET / shows the model's owner (templates/index.html draws it).

Contract:
- `context(card, refusal, stats, by_hour, by_day, openapi_document, base_url)` turns the model
  card, the readiness check's refusal (None when ready), one /stats answer for the whole history
  and two /stats/series answers (per hour, per day) into the template's variables: readiness,
  the model and its library versions (with the ones that differ from training), the features
  with their types and training categories, the figures overall and per model version, the data
  of the charts (drawn in the browser by static/page.js), and a "try it" curl line whose
  observation is built from the model's own request schema.
- It sees aggregates only: counts and quality figures, never an observation or an id.
Nothing here knows Flask or the database.
"""

import json
import shlex

FIGURES = ["predictions", "labelled", "roc_auc", "roc_auc_max_error", "log_loss", "brier_score"]
MOST_CATEGORIES_SHOWN = 12


def context(card, refusal, stats, by_hour, by_day, openapi_document, base_url):
    return {
        "ready": refusal is None,
        "refusal": refusal,
        "card": card,
        "version_warnings": version_warnings(card["versions"]),
        "features": features(card["features"]),
        "overall": figures(stats["overall"]),
        "by_version": {version: figures(found) for version, found in stats["by_model_version"].items()},
        "as_of": stats["as_of"],
        "charts": {
            "by_hour": window(by_hour),
            "by_day": window(by_day),
            "calibration": stats["overall"].get("calibration", []),
            "histogram": stats["overall"].get("histogram", []),
        },
        "try_it": try_it(openapi_document, base_url),
    }


def window(series):
    """A series' points per model version, and the span the chart's time axis shows."""
    return {
        "since": series["since"],
        "as_of": series["as_of"],
        "by_model_version": series["by_model_version"],
    }


def version_warnings(versions):
    return [
        f"{package} {found['running']} is running; the model was trained with {found['trained_with'] or 'an unknown version'}"  # noqa: E501
        for package, found in versions.items()
        if found["running"] != found["trained_with"]
    ]


def features(described):
    shown = []
    for feature in described:
        categories = feature.get("categories", [])
        more = len(categories) - MOST_CATEGORIES_SHOWN
        listed = ", ".join(json.dumps(category) for category in categories[:MOST_CATEGORIES_SHOWN])
        shown.append(
            {
                "name": feature["name"],
                "dtype": feature["dtype"],
                "accepts": feature["accepts"],
                "categories": listed + (f" and {more} more (GET /model lists them)" if more > 0 else ""),
            }
        )
    return shown


def figures(found):
    return {name: found.get(name) for name in FIGURES}


def example_value(property_schema):
    """A value the schema takes: a training category where there is one, else a plain one."""
    for choices in (property_schema.get("enum"), property_schema.get("examples")):
        if choices:
            return next((choice for choice in choices if choice is not None), None)
    kinds = property_schema.get("type", [])
    if "integer" in kinds:
        return 0
    if "number" in kinds:
        return 0.0
    if "boolean" in kinds:
        return False
    return None


def try_it(openapi_document, base_url):
    properties = openapi_document["components"]["schemas"]["Observation"]["properties"]
    body = {
        "id": 123456789,
        "observation": {name: example_value(found) for name, found in properties.items()},
    }
    return (
        f"curl -X POST {shlex.quote(base_url.rstrip('/') + '/predict')} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    )
