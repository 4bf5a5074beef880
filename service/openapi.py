"""GET /openapi.json: an OpenAPI 3.1 description of every route, for client developers.

Contract:
- `document(schema, labels, model_card, max_body_bytes)` returns the document as a dict. The
  /predict request is generated from the model's artifacts: each feature with the JSON type its
  training dtype accepts (schema.feature_kind), always nullable (null means missing), strings
  bounded by MAX_STRING_CHARS, a category column as an enum of its categories, and the
  categories an encoder learnt in training listed where the model has them (not an enum: an
  unseen category is scored, with a warning). /update's true_class lists exactly what
  schema.Labels accepts. Every error answer is the one shape {"error": "..."}.
- Each operation has an operationId (its path's words: "predict", "stats_series", "index" for /),
  and /predict's 200 links to /update with the same id, so that a client generator or a
  stateful fuzzer can follow a prediction to its outcome. A route whose token is set on this
  server (`tokens`: the guard names in force) requires it as an HTTP bearer token; a route whose
  token is unset is documented as open, as it is.
- Schemas are JSON Schema 2020-12, which OpenAPI 3.1 uses as is, so a client can validate a
  request with any JSON Schema library. What JSON can't say (the bare NaN token, accepted as a
  missing value) is in the descriptions.
Nothing here knows Flask or the database.
"""

import json

from service.errors import ON_EVERY_ROUTE, STATUSES
from service.model_card import example_observation
from service.routes import LISTED
from service.schema import INT64_MAX, INT64_MIN

JSON_TYPES = {
    "integer": {"type": ["integer", "null"], "minimum": INT64_MIN, "maximum": INT64_MAX},
    "number": {"type": ["number", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "string": {"type": ["string", "null"]},
    "string or number": {"type": ["string", "number", "null"]},
}


def document(schema, labels, model_card, max_body_bytes, tokens=()):
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Prediction service",
            "version": model_card["model_version"],
            "description": (
                "A scikit-learn binary classifier behind HTTP: POST /predict scores an observation "
                "and records it, POST /update records its true class later, GET /stats tells how "
                f"well the model does on the labelled ones. Bodies are JSON of at most {max_body_bytes} "
                "bytes; a missing value may be sent as null or as the bare token NaN."
            ),
        },
        "paths": paths(tokens, labels),
        "components": {
            "schemas": schemas(schema, labels, model_card),
            "securitySchemes": {guard.setting: BEARER for guard in tokens},
        },
    }


BEARER = {"type": "http", "scheme": "bearer", "description": "the token set on the server"}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema_object, media_type="application/json"):
    return {media_type: {"schema": schema_object}}


def operation_id(route):
    return route.path.strip("/").replace("/", "_").replace("-", "_").replace(".", "_") or "index"


def answer_schema(route):
    if route.media_type != "application/json":
        return {"type": "string"}
    return ref(route.answer_schema) if route.answer_schema else {"type": "object"}


def outcome_link(labels):
    """From a prediction to its outcome: /update with the id /predict was sent."""
    body = {"id": "$request.body#/id", "true_class": labels.positive}
    return {"RecordTheOutcome": {"operationId": "update", "requestBody": body}}


def operation(route, tokens, labels):
    """The OpenAPI operation of a route of routes.LISTED."""
    ok = {"description": route.answer, "content": json_content(answer_schema(route), route.media_type)}
    if route.path == "/predict":
        ok["links"] = outcome_link(labels)
    responses = {"200": ok}
    for status in sorted({*route.errors, *ON_EVERY_ROUTE}):
        responses[str(status)] = {"description": STATUSES[status], "content": json_content(ref("Error"))}
    found = {"operationId": operation_id(route), "summary": route.summary, "responses": responses}
    if route.guard in tokens:
        found["security"] = [{route.guard.setting: []}]
    if route.body is not None:
        found["requestBody"] = {"required": True, "content": json_content(ref(route.body))}
    if route.parameters:
        found["parameters"] = [query_parameter(p) for p in route.parameters]
    return found


def query_parameter(parameter):
    found = {
        "name": parameter.name,
        "in": "query",
        "required": False,
        "description": parameter.description,
        "schema": parameter.schema,
    }
    return found | ({"style": "form", "explode": True} if parameter.exploded else {})


def paths(tokens, labels):
    found = {}
    for route in LISTED:
        found.setdefault(route.path, {})[route.method.lower()] = operation(route, tokens, labels)
    return found


def feature_schema(kind, categories, learnt, max_string_chars):
    if kind == "category":
        return {"enum": [*categories, None]}
    found = dict(JSON_TYPES[kind])
    if "string" in found["type"]:
        found["maxLength"] = max_string_chars
    if learnt:
        found["examples"] = learnt
        found["description"] = (
            "the categories seen in training are listed in examples; another is scored with a warning"
        )
    return found


def observation_schema(schema, model_card):
    learnt = {feature["name"]: feature.get("categories") for feature in model_card["features"]}
    return {
        "type": "object",
        "description": (
            "The model's features; null (or NaN) is a missing value. At least one feature must be "
            "present; an absent one is treated as missing and an unknown one is ignored, with a warning."
        ),
        "properties": {
            column: feature_schema(
                schema.kinds[column],
                schema.categories.get(column),
                learnt.get(column),
                schema.max_string_chars,
            )
            for column in schema.columns
        },
        "anyOf": [{"required": [column]} for column in schema.columns],
        "examples": [example_observation(model_card["features"])],  # typical values in training
    }


def schemas(schema, labels, model_card):
    observation_id = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
    true_class = []
    for value, _ in labels.accepted:  # the model's labels, then 0/1 and false/true when they apply
        if not any(type(value) is type(seen) and value == seen for seen in true_class):
            true_class.append(value)
    timestamp = {"type": ["string", "null"], "format": "date-time"}
    return {
        "Observation": observation_schema(schema, model_card),
        "PredictRequest": {
            "type": "object",
            "required": ["id", "observation"],
            "properties": {"id": observation_id, "observation": ref("Observation")},
        },
        "PredictAnswer": {
            "type": "object",
            "required": ["proba"],
            "properties": {
                "proba": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": f"the probability of the class {json.dumps(labels.positive)}",
                },
                "warnings": {"type": "array", "items": {"type": "string"}},
            },
        },
        "UpdateRequest": {
            "type": "object",
            "required": ["id", "true_class"],
            "properties": {
                "id": observation_id,
                "true_class": {"enum": true_class, "description": labels.describe()},
            },
        },
        "StoredPrediction": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "observation_id": observation_id,
                "observation": {"type": "string", "description": "the features as stored, JSON text"},
                "proba": {"type": "number"},
                "true_class": {"enum": [0, 1, None]},
                "model_version": {"type": "string"},
                "created_at": timestamp,
                "updated_at": timestamp,
            },
        },
        "DriftReport": drift_report_schema(),
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "what is wrong and what to do"}},
        },
    }


def drift_report_schema():
    """GET /drift's answer (monitoring/drift.py)."""
    share = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
    feature = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "psi": {"type": "number", "description": "population stability index against training"},
            "psi_by_chance": {"type": "number", "description": "what chance alone gives at this many rows"},
            "drifted": {"type": "boolean"},
            "missing": share,
            "training_missing": share,
            "unseen": {**share, "description": "the share of values training never saw (null: unknown)"},
            "moved_most": {"type": "array", "items": {"type": "string"}},
            "bins": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"bin": {"type": "string"}, "training": share, "now": share},
                },
            },
        },
    }
    version = {
        "type": "object",
        "required": ["predictions", "rows"],
        "properties": {
            "predictions": {"type": "integer"},
            "rows": {
                "type": "integer",
                "description": "the predictions with feature bins, that drift rests on",
            },
            "too_few_rows": {"type": "boolean"},
            "training_rows": {"type": "integer"},
            "expected_roc_auc": {**share, "description": "if the probabilities are calibrated"},
            "drifted": {"type": "array", "items": {"type": "string"}},
            "features": {"type": "array", "items": feature, "description": "worst first"},
            "probabilities": {"type": "object", "description": "the probabilities against the test set's"},
            "message": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "required": ["by_model_version"],
        "properties": {
            "window_hours": {"type": ["number", "null"]},
            "since": {"type": ["string", "null"], "format": "date-time"},
            "as_of": {"type": "string", "format": "date-time"},
            "by_model_version": {"type": "object", "additionalProperties": version},
            "message": {"type": "string", "description": "when no prediction falls in the window"},
        },
    }
