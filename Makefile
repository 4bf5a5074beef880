# The README's commands. Each one sets up what it needs on a fresh machine.
#   make run    serve the model on http://localhost:5000 (SQLite, production packages)
#   make test   the whole test suite, SQLite and a throwaway PostgreSQL, plus the linters
#   make bench  the load benchmark (see the README's performance section)
#   make bench-reload  what a reload (SIGHUP) costs clients (README: Reloading)
#   make check-model  check the model files at the top level (SAMPLE=data.csv scores its rows too)
#   make notebooks    open the notebooks in JupyterLab (JUPYTER_ARGS passes options)

PYTHON ?= python3
PROD_VENV := .venv-prod
DEV_VENV := .venv

.PHONY: run test lint bench bench-reload check-model notebooks clean

run: $(PROD_VENV)/.installed
	GUNICORN_ACCESS_LOG=$${GUNICORN_ACCESS_LOG--} $(PROD_VENV)/bin/gunicorn --config gunicorn.conf.py app:app

test: $(DEV_VENV)/.installed
	scripts/ensure-postgres
	scripts/ensure-containers
	scripts/ensure-browser
	$(MAKE) lint
	$(DEV_VENV)/bin/pytest

# The service's own packages, so the check loads the model exactly as a deploy does.
check-model: $(PROD_VENV)/.installed
	$(PROD_VENV)/bin/python model_check.py $(if $(SAMPLE),--sample $(SAMPLE))

notebooks: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/jupyter lab $(JUPYTER_ARGS)

# BENCH_ARGS passes options to bench/run.py, e.g. BENCH_ARGS="--seconds 5 --repeat 3".
bench: $(DEV_VENV)/.installed
	scripts/ensure-postgres
	scripts/ensure-wrk
	$(DEV_VENV)/bin/python bench/run.py $(BENCH_ARGS)

# What a reload (SIGHUP) costs clients, with and without reuse_port (README: Reloading).
bench-reload: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/python bench/reload.py $(BENCH_ARGS)

lint: $(DEV_VENV)/.installed
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/ruff format --check .

# A virtualenv is rebuilt whenever its requirements file changes.
$(PROD_VENV)/.installed: requirements_prod.txt
	scripts/make-venv $(PYTHON) $(PROD_VENV) requirements_prod.txt
	touch $@

$(DEV_VENV)/.installed: requirements_prod.txt requirements_dev.txt
	scripts/make-venv $(PYTHON) $(DEV_VENV) requirements_dev.txt
	touch $@

clean:
	rm -rf $(PROD_VENV) $(DEV_VENV) .pytest_cache .ruff_cache .hypothesis
