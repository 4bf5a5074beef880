"""GET /list-db-contents: the stored predictions as JSON, a page at a time.

Contract:
- `record(prediction, with_observation=True)`: a stored row as a JSON-ready dict, timestamps in
  ISO 8601 UTC (the shape /update answers too), without feature_bins or a challenger's answer.
- `page_json(prediction_model, page, per_page, dumps)`: the page's JSON, as a generator that
  reads and writes a few rows at a time, so that a worker never holds a whole page, which can
  be hundreds of megabytes when rows hold long observations. Keys in jsonify's order.
"""

from playhouse.shortcuts import model_to_dict

from service.timestamps import iso_utc


def record(prediction, with_observation=True):
    row = model_to_dict(prediction)
    del row["feature_bins"]  # the drift counts' bookkeeping (monitoring/population.py), not the record
    del row["challenger_proba"], row["challenger_version"]  # compared, never handed out one by one
    if not with_observation:
        del row["observation"]
    return row | {name: iso_utc(row[name]) for name in ("created_at", "updated_at")}


def page_json(model, page, per_page, dumps):
    """Reads the page's ids and the total now (a database fault is still an error answer), the
    rows as the JSON is written."""
    ids = [row.id for row in model.select(model.id).order_by(model.id).paginate(page, per_page)]
    return written(model, page, per_page, ids, model.select().count(), dumps)


def written(model, page, per_page, ids, total, dumps, rows_at_once=10):
    yield f'{{"page":{page},"per_page":{per_page},"predictions":['
    for start in range(0, len(ids), rows_at_once):
        chunk = model.select().where(model.id.in_(ids[start : start + rows_at_once]))
        for position, row in enumerate(sorted(chunk, key=lambda row: row.id), start):
            yield ("," if position else "") + dumps(record(row))
    yield f'],"total":{total}}}\n'
