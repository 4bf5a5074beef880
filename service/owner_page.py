"""What the page at GET / shows the model's owner (templates/index.html draws it).

Contract:
- `context(card, refusal, stats, by_hour, by_day, filling, base_url)` turns the model
  card, the readiness check's refusal (None when ready), one /stats answer for the whole history
  and two /stats/series answers (per hour, per day) into the template's variables: readiness,
  the model and its library versions (with the ones that differ from training), the features
  with their types and training categories, the figures overall and per model version, the data
  of the charts (drawn in the browser by static/page.js), and a "try it" curl line whose
  observation is model_card.example_observation(); and how full the database is (`filling`,
  from storage.usage()).
- It sees aggregates only: counts and quality figures, never an observation or an id.
Nothing here knows Flask or the database.
"""

import json
import shlex

from service.model_card import example_observation

FIGURES = ["predictions", "labelled", "roc_auc", "roc_auc_max_error", "log_loss", "brier_score"]
MOST_CATEGORIES_SHOWN = 12


def context(card, refusal, stats, by_hour, by_day, filling, base_url):
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


def try_it(card, base_url):
    body = {"id": 123456789, "observation": example_observation(card["features"])}
    return (
        f"curl -X POST {shlex.quote(base_url.rstrip('/') + '/predict')} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"
    )
