"""gunicorn settings of the registry: `gunicorn --config deploy/gunicorn.conf.py 'registry:create_app()'`.

Every value can be overridden from the environment; the defaults suit a small server.
"""

import multiprocessing
import os

bind = os.environ.get("REGISTRY_BIND", "0.0.0.0:8000")
# Requests spend most time in Python (validation) and some waiting on PostgreSQL: a couple of
# sync workers per core, each with a few threads for the waits.
workers = int(os.environ.get("REGISTRY_WORKERS", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("REGISTRY_THREADS", 4))
worker_class = "gthread"
timeout = int(os.environ.get("REGISTRY_WORKER_TIMEOUT", 60))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so that no slow leak can grow without bound.
max_requests = int(os.environ.get("REGISTRY_MAX_REQUESTS", 20000))
max_requests_jitter = 2000
# No access log: its request line would carry subject ids. The app logs routes, not paths.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("REGISTRY_LOG_LEVEL", "info").lower()
# Request line and header limits (bodies are limited by the app: REGISTRY_MAX_BODY_BYTES).
limit_request_line = 4094
limit_request_fields = 100
