"""gunicorn's settings, in one place: the Dockerfile, heroku.yml, Procfile, `make run` and
`make bench` all start `gunicorn --config gunicorn.conf.py app:app`.

Every value can be changed from the environment, which is how Heroku configures a dyno.
"""

import os

# Heroku tells the dyno which port to listen on in $PORT; 5000 on a laptop.
bind = f"0.0.0.0:{os.environ.get('PORT') or 5000}"

# Processes x threads: each worker process holds up to `threads` requests at once, and the
# requests that arrive together are scored as one batch (see batching.py).
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 16)

# Each worker opens its own listening socket (SO_REUSEPORT), and the kernel spreads new
# connections evenly over them. With one shared socket, whichever worker happened to be
# idle took most of them: 13 of 16 keep-alive connections on one worker was common, and
# that worker then ran at full load while the other one waited.
reuse_port = True

# Load app.py once in the master before forking: the tables are created once (not by every
# worker racing on an empty database), and the workers share the model's memory.
preload_app = True

# Errors to stderr, where `heroku logs` finds them. No access log by default: Heroku's router
# already logs every request with its status and time, and writing a second line per request
# costs about a seventh of the time the service spends outside the model. `make run` turns it
# on (GUNICORN_ACCESS_LOG=-) so you see your requests locally.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 30)

# gunicorn's runtime control socket is not used here, and several instances on one machine
# (tests, benchmarks) would fight over its default path.
control_socket_disable = True
