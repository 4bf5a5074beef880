"""The machinery behind app.py. A student swapping in their own model never needs to open it.

Each module has one reason to change, states its contract in its docstring, and receives what
it needs from app.py rather than importing it:

    settings        every setting, its default and how it is read
    platforms       which platform the service runs on, and what it needs there
    model           the one place that loads, checks and calls a model
    artifacts       the model's files, loaded and checked
    fast_path       a fitted pipeline rebuilt with numpy, for the few rows of a request
    schema          what /predict and /update accept, from the model's files
    model_card      GET /model, and the one rule for an example observation
    predictions     scoring and storing a batch of observations
    batching        requests that arrive together share one call of the model
    database        the connection pool and what each database fault means
    migrations      creating and upgrading the tables
    commands        the release's schema upgrade and archiving, run beside the web process
    archive         moving older predictions to a file, keeping them in /stats
    storage         how full the database is, and how fast it fills
    routes          the table of routes, and each one's guard
    auth            the token check every guarded route passes
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

This map is the only one (tests/test_layout.py checks it names every module); docs/internals.md
explains how they work together.
"""
