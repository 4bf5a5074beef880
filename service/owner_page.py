"""What the page at GET / shows the model's owner (templates/index.html draws it).

Contract:
- `QUESTIONS`: what the page asks reports.Monitor, by the name `context` takes each answer under:
  /stats for the whole history, /stats/series per hour (48 hours) and per day (90 days), and
  /drift and /compare for the whole history.
- `context(card=, refusal=, stats=, by_hour=, by_day=, drift=, comparison=, filling=, base_url=)`
  turns the model card, the readiness check's refusal (None when ready), those answers, the
  database's filling and the service's address into the template's variables: readiness, the
  model and its library versions (with the ones that differ from training), the features with
  their types, training categories and typical values, the figures overall and per model version
  (realised and expected ROC AUC, and the test set's), when each version took over (the first
  hour it served) and last served, the challenger's state and its paired comparison with the
  running model (each metric of both, the difference and its interval, the verdict), each
  version's drift table (worst feature first), the data of the charts (drawn in the browser by
  static/page.js; for the running version's DRIFT_CHARTS worst features, each bin's share in
  training and now), a "try it" curl line whose observation is
  model_card.example_observation(), and how full the database is (`filling`, from
  storage.usage()).
- It sees aggregates only: counts and quality figures, never an observation or an id.
Nothing here knows Flask or the database.
"""

import json
import shlex

from service.model_card import example_observation
from service.monitoring.reports import rounded_up

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
    "comparison": ("comparison", None),
}
METRIC_NAMES = {"roc_auc": "ROC AUC", "log_loss": "log loss", "brier_score": "Brier score"}
BETTER = {1: "the challenger", -1: "the running model", 0: "neither yet", None: "—"}
MOST_CATEGORIES_SHOWN = 12


def context(*, card, refusal, stats, by_hour, by_day, drift, comparison, filling, base_url):
    return {
        "ready": refusal is None,
        "refusal": refusal,
        "card": card,
        "version_warnings": version_warnings(card["versions"]),
        "features": features(card["features"]),
        "overall": figures(stats["overall"]),
        "by_version": {version: figures(found) for version, found in stats["by_model_version"].items()},
        "as_of": stats["as_of"],
        "took_over": took_over(stats["by_model_version"], card["model_version"]),
        "challenger": challenger_shown(card.get("challenger")),
        "comparisons": [comparison_shown(found) for found in comparison["comparisons"]],
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


def took_over(by_version, running):
    """The versions in the order they took over: the first and last hour each served in."""
    served = [(found["first_hour_served"], version, found) for version, found in by_version.items()
              if "first_hour_served" in found]  # fmt: skip
    return [
        {
            "version": version,
            "from": first,
            "last": found["last_hour_served"],
            "role": "running now" if version == running else "replaced",
        }
        for first, version, found in sorted(served)
    ]


def challenger_shown(found):
    """What the page says of challenger/: None when there is none."""
    if found is None:
        return None
    if "refused" in found:
        return {"refused": found["refused"]}
    return {"version": found["model_version"], "failing": found.get("failing")}


def comparison_shown(found):
    """One running model against its challenger, as /compare gives it, worded for the page."""
    settle = found["pairs_to_settle"]
    settle = None if settle is None else f"about {settle:,} labelled pairs in all would likely settle it"
    return {
        "running": found["model_version"],
        "challenger": found["challenger_version"],
        "scored": f"{found['scored']:,}",
        "failed": f"{found['challenger_failed']:,}",
        "pairs": f"{found['pairs']:,} ({found['positives']:,} positive, {found['negatives']:,} negative)",
        "verdict": found["verdict"],
        "settle": settle,
        "level": f"{found['level']:.0%}",
        "auc_max_error": rounded_up(found["metrics"]["roc_auc"]["max_error"]),  # never shown below it
        "metrics": [metric_shown(name, found["metrics"][name]) for name in METRIC_NAMES],
    }


def metric_shown(name, figures):
    low, high = figures["interval"] or (None, None)
    return {
        "key": name,
        "name": METRIC_NAMES[name],
        "running": decimal(figures["running"]),
        "challenger": decimal(figures["challenger"]),
        "difference": decimal(figures["difference"], sign=True),
        "interval": "—" if low is None else f"{decimal(low, sign=True)} to {decimal(high, sign=True)}",
        "better": BETTER[figures["better"]],
    }


def decimal(value, sign=False):
    return "—" if value is None else f"{value:{'+' if sign else ''}.4f}"


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
