# The README's commands. Each one sets up what it needs on a fresh machine.
#   make run    serve the model on http://localhost:5000 (SQLite, production packages)
#   make test   the whole test suite, SQLite and a throwaway PostgreSQL, plus the linters
#   make check  the quick loop: the linters and every test that needs no server process
#   make bench  the load benchmark (docs/performance.md)
#   make bench-reload  what a reload (SIGHUP) costs clients (docs/performance.md)
#   make bench-soak    half an hour at a steady rate: does memory, or anything, grow? (docs/performance.md)
#   make check-model  check the model files at the top level (SAMPLE=data.csv scores its rows too)
#   make release      upgrade the schema of the database DATABASE_URL names (the release command)
#   make archive BEFORE=2026-01-01  move older predictions to archive/*.csv, keeping them in /stats
#   make retrain SOURCE=<database URL, service URL or archive CSV>  a challenger trained on what was served
#   make promote      the model in challenger/ becomes the running one (the replaced one goes to previous/)
#   make rollback     the model in previous/ and the running one trade places
#   make notebooks    open the notebooks in JupyterLab (JUPYTER_ARGS passes options)

PYTHON ?= python3
PROD_VENV := .venv-prod
DEV_VENV := .venv

.PHONY: run test test-components check lint bench bench-reload bench-soak check-model release archive retrain promote rollback notebooks clean

run: $(PROD_VENV)/.installed
	GUNICORN_ACCESS_LOG=$${GUNICORN_ACCESS_LOG--} $(PROD_VENV)/bin/gunicorn --config gunicorn.conf.py app:app

# The two virtualenvs and the system's packages are set up side by side: pip and apt each keep
# about one core busy, and on a fresh clone they are most of the time before the first test.
test:
	$(MAKE) --no-print-directory -j3 $(DEV_VENV)/.installed $(PROD_VENV)/.installed test-components
	$(MAKE) lint
	$(DEV_VENV)/bin/pytest

# What the suite runs beside Python (under CI=true, a missing one fails the run).
test-components:
	tools/ensure-postgres
	tools/ensure-containers
	tools/ensure-browser
	tools/ensure-wrk
	tools/ensure-prometheus
	tools/ensure-node-packages

check: $(DEV_VENV)/.installed
	tools/ensure-postgres
	$(MAKE) lint
	$(DEV_VENV)/bin/pytest -m 'not slow'

# The service's own packages, so the check loads the model exactly as a deploy does.
check-model: $(PROD_VENV)/.installed
	$(PROD_VENV)/bin/python -m tools.check_model $(if $(SAMPLE),--sample $(SAMPLE))

# A second model (docs/monitoring.md): retrain on what was served, into challenger/; switch to it and back.
retrain: $(PROD_VENV)/.installed
	$(PROD_VENV)/bin/python -m tools.retrain $(SOURCE) $(if $(TOKEN),--token $(TOKEN)) $(if $(MIX),--mix $(MIX))

promote: $(PROD_VENV)/.installed
	$(PROD_VENV)/bin/python -m tools.promote

rollback: $(PROD_VENV)/.installed
	$(PROD_VENV)/bin/python -m tools.promote --rollback

# The platforms' release command, by hand: DATABASE_URL=<the database's URL> make release.
release: $(PROD_VENV)/.installed
	$(PROD_VENV)/bin/flask --app app upgrade-database

# Make room in the database without losing the history /stats is built on (docs/operations.md).
archive: $(PROD_VENV)/.installed
	$(PROD_VENV)/bin/flask --app app archive-predictions --before $(BEFORE) $(if $(TO),--to $(TO))

notebooks: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/jupyter lab $(JUPYTER_ARGS)

# BENCH_ARGS passes options to tools/bench/run.py, e.g. BENCH_ARGS="--seconds 5 --repeat 3".
bench: $(DEV_VENV)/.installed
	tools/ensure-postgres
	tools/ensure-wrk --required
	$(DEV_VENV)/bin/python -m tools.bench.run $(BENCH_ARGS)

# What a reload (SIGHUP) costs clients, with and without reuse_port (docs/operations.md).
bench-reload: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m tools.bench.reload $(BENCH_ARGS)

# BENCH_ARGS here: --minutes, --rate, --sample-seconds, --database-url (tools/bench/soak.py).
bench-soak: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python -m tools.bench.soak $(BENCH_ARGS)

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

# A virtualenv is rebuilt whenever its requirements file changes.
$(PROD_VENV)/.installed: requirements_prod.txt
	tools/make-venv $(PYTHON) $(PROD_VENV) requirements_prod.txt
	touch $@

$(DEV_VENV)/.installed: requirements_prod.txt requirements_dev.txt
	tools/make-venv $(PYTHON) $(DEV_VENV) requirements_dev.txt
	touch $@

clean:
	rm -rf $(PROD_VENV) $(DEV_VENV) .pytest_cache .ruff_cache .hypothesis
