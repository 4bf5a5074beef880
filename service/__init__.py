"""The machinery behind app.py. A student swapping in their own model never needs to open it.

Each module has one reason to change, states its contract in its docstring, and receives what
it needs from app.py rather than importing it:

    settings        every setting, its default and how it is read
    artifacts       the model's files, loaded and checked
    schema          what /predict and /update accept, from the model's files
    model_card      GET /model, and the one rule for an example observation
    predictions     scoring and storing a batch of observations
    batching        requests that arrive together share one predict_proba call
    database        the connection pool and what each database fault means
    migrations      creating and upgrading the tables
    routes, auth    the table of routes, and the token that guards each
    errors          the one error shape and the statuses it comes with
    listing         /list-db-contents
    request_limits  the body limit, and a 413 the client can read
    buffering_worker  gunicorn's worker, reading whole requests before a thread serves them
    coalescing      one computation for many callers of the same report
    metrics         /metrics, added up over the workers
    openapi         /openapi.json, from the route table and the model's files
    owner_page      what the page at GET / shows (templates/, static/)
    monitoring/     the running totals, the training profile, and the reports read from them
    timestamps      time as the table keeps it

The docs/ folder explains how they work together.
"""
