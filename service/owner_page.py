"""What the page at GET / shows the model's owner (templates/index.html draws it).

Contract:
- `QUESTIONS`: what the page asks reports.Monitor, by the name `context` takes each answer under:
  /stats for the whole history, /stats/series per hour (48 hours) and per day (90 days), and
  /drift for the whole history.
- `context(card=, refusal=, stats=, by_hour=, by_day=, drift=, filling=, base_url=)` turns the
  model card, the readiness check's refusal (None when ready), those answers, the database's
  filling and the service's address into the template's variables: readiness,
  the model and its library versions (with the ones that differ from training), the features
  with their types, training categories and typical values, the figures overall and per model
  version (realised and expected ROC AUC, and the test set's), each version's drift table (worst
  feature first), the data of the charts (drawn in the browser by static/page.js; for the running
  version's DRIFT_CHARTS worst features, each bin's share in training and now), and a "try it" curl line whose
  observation is model_card.example_observation(); and how full the database is (`filling`,
  from storage.usage()).
- It sees aggregates only: counts and quality figures, never an observation or an id.
Nothing here knows Flask or the database.
"""

import json
import shlex

from service.model_card import example_observation

FIGURES = [
    "predictions", "labelled", "roc_auc", "roc_auc_max_error", "expected_roc_auc", "test_roc_auc", "log_loss",
    "brier_score",
]  # fmt: skip
DRIFT_CHARTS = 3
QUESTIONS = {
    "stats": ("stats", None),
    "by_hour": ("series", "hour", 48.0),
    "by_day": ("series", "day", 90 * 24.0),
    "drift": ("drift", None),
}
MOST_CATEGORIES_SHOWN = 12


def context(*, card, refusal, stats, by_hour, by_day, drift, filling, base_url):
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
            "drift": worst_features(drift, card["model_version"]),
            "test_roc_auc": card["training_profile"].get("test_roc_auc"),
        },
        "drift": drift_shown(drift),
        "try_it": try_it(card, base_url),
        "storage": storage_shown(filling),
    }


def storage_shown(usage):
    """The database's filling as the page words it: sizes in MB, the share and days left where a
    plan size is set."""
    shown = {
        "size": f"{usage['database_bytes'] / 1e6:,.1f} MB",
        "predictions": f"{usage['predictions']:,}",
        "per_prediction": f"{usage['bytes_per_prediction']:,} bytes"
        if usage["bytes_per_prediction"]
        else "—",
        "added_last_week": f"{usage['added_last_week']:,}",
        "warning": usage.get("warning"),
    }
    if "plan_bytes" in usage:
        shown["plan"] = f"{usage['share_used']:.1%} of {usage['plan_bytes'] / 1e9:g} GB"
        days = usage["days_left"]
        shown["days_left"] = "—" if days is None else f"{days:,.0f}"
    return shown


def drift_shown(drift):
    """Per model version: its rows, a note where drift can't be judged, and its features, worst first."""
    shown = {}
    for version, found in drift["by_model_version"].items():
        note = found.get("message")
        if found.get("too_few_rows"):
            note = f"only {found['rows']} rows: too few to judge drift; PSI by chance alone is still large"
        shown[version] = {
            "rows": found["rows"],
            "note": note,
            "features": [
                {
                    "name": feature["name"],
                    "psi": f"{feature['psi']:.3f}",
                    "by_chance": f"{feature['psi_by_chance']:.3f}",
                    "drifted": feature["drifted"],
                    "missing": f"{feature['missing']:.1%} (training {feature['training_missing']:.1%})",
                    "unseen": "—" if feature["unseen"] is None else f"{feature['unseen']:.1%}",
                    "moved": ", ".join(feature["moved_most"]),
                }
                for feature in found.get("features", [])
            ],
        }
    return shown


def worst_features(drift, version):
    """The running version's DRIFT_CHARTS worst features: each bin's share in training and now."""
    found = drift["by_model_version"].get(version, {})
    return [
        {"name": feature["name"], "psi": feature["psi"], "bins": feature["bins"]}
        for feature in found.get("features", [])[:DRIFT_CHARTS]
    ]


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
                "typical": json.dumps(feature["typical"]) if "typical" in feature else "—",
            }
        )
    return shown


def figures(found):
    return {name: found.get(name) for name in FIGURES}


def try_it(card, base_url):
    body = {"id": 123456789, "observation": example_observation(card["features"])}
    return (
        f"curl -X POST {shlex.quote(base_url.rstrip('/') + '/predict')} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    )
