# The image Heroku builds from heroku.yml (and `docker build .` anywhere else).
# Same Python minor version as .python-version.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Requirements first: rebuilding after a code change reuses this cached layer.
# The service runs as an unprivileged user, not as root. It owns /app, where the default
# SQLite database (predictions.db) is created, but not the code, which it can't change.
COPY requirements_prod.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements_prod.txt \
    && groupadd --gid 10001 app \
    && useradd --no-log-init --create-home --uid 10001 --gid app app \
    && mkdir /app \
    && chown app:app /app

WORKDIR /app
COPY . .
USER 10001

# gunicorn.conf.py binds to $PORT, which Heroku sets; 5000 when run elsewhere.
EXPOSE 5000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]
