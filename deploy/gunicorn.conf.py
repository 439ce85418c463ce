"""gunicorn settings of the registry: `gunicorn --config deploy/gunicorn.conf.py 'registry:create_app()'`.

Every value can be overridden from the environment (the REGISTRY_* settings of
registry/config.py, listed in the README); the defaults suit a small server.
"""

import multiprocessing
import os
import shutil
import tempfile

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from registry.config import settings_from_environment

_settings = settings_from_environment()
bind = _settings["REGISTRY_BIND"]
# Requests spend most time in Python (validation) and some waiting on PostgreSQL: a couple of
# sync workers per core, each with a few threads for the waits. Each worker holds up to
# 2 x REGISTRY_DB_POOL_SIZE database connections: size PostgreSQL's max_connections for it.
workers = int(_settings["REGISTRY_WORKERS"] or multiprocessing.cpu_count() * 2)
threads = _settings["REGISTRY_THREADS"]


class QuietWorker(ThreadWorker):
    """gunicorn's threaded worker, except that a request it cannot parse is answered and logged
    without repeating it: gunicorn quotes the bad request line or header in its 400 and in its
    log line, and either may hold a subject id or any value a client chose."""

    _quiet_classes: dict[type, type] = {}

    def handle_error(self, req, client, addr, exc):  # noqa: ANN001, ANN201
        """Answer as gunicorn does (same status), with a message that names no value."""
        kind = type(exc)
        quiet_class = self._quiet_classes.setdefault(kind, type(kind.__name__, (kind,), {
            "__str__": lambda self: "(not repeated)", "__repr__": lambda self: kind.__name__}))
        quiet = quiet_class.__new__(quiet_class)
        try:  # what gunicorn logs with the error is this exception, not the client's text
            raise quiet from None
        except quiet_class:
            super().handle_error(None, client, addr, quiet)


worker_class = QuietWorker
timeout = _settings["REGISTRY_WORKER_TIMEOUT"]
graceful_timeout = 30
keepalive = 5
# The app is loaded in each worker, never in the master: database pools and metric files must
# not be shared across fork.
preload_app = False
# Recycle workers now and then so that no slow leak can grow without bound.
max_requests = _settings["REGISTRY_MAX_REQUESTS"]
max_requests_jitter = 2000
# Heartbeat files in memory: a container's disk may be slow or read-only.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"
# Behind nginx on the same host: trust its X-Forwarded-Proto (see REGISTRY_TRUSTED_PROXIES).
forwarded_allow_ips = _settings["REGISTRY_FORWARDED_ALLOW_IPS"]
# No access log: its request line would carry subject ids. The app logs routes, not paths.
accesslog = None
# No control socket: gunicorn's default path (~/.gunicorn/gunicorn.ctl) is shared by every
# instance of the same user, and stopping one removed it under the others. Reload and stop go
# through signals (HUP, TERM), as systemd and docker send them.
control_socket_disable = True


class NoAccessLogger(Logger):
    """gunicorn's logger without the access log. Given any logging config, gunicorn builds every
    request's access line (a dozen fields) even when its logger writes nowhere."""

    def access(self, resp, req, environ, request_time):  # noqa: ANN001, ANN201
        """Log nothing, and build nothing to log."""


logger_class = NoAccessLogger
errorlog = "-"
loglevel = _settings["REGISTRY_LOG_LEVEL"].lower()
# Every log line as JSON on standard error: gunicorn's, the registry's (which propagate to the
# root logger) and the libraries'. The filter adds the request id to lines made in a request.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "registry.observability.json_formatter"}},
    "filters": {"request": {"()": "registry.observability.RequestContextFilter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                            "filters": ["request"], "stream": "ext://sys.stderr"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
}
# Request line and header limits (bodies are limited by the app: REGISTRY_MAX_BODY_BYTES).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# Prometheus in multiprocess mode: every worker writes its metrics to files in one directory and
# /metrics adds them up. The directory must exist before the workers import the app, and must be
# emptied when the server starts (stale files of an earlier run would be counted again).
_metrics_dir = _settings["PROMETHEUS_MULTIPROC_DIR"]
_own_metrics_dir = not _metrics_dir
if _own_metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="registry-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


# Rate limits hold whatever the number of workers: every worker counts in one store. Without
# REGISTRY_RATE_LIMIT_STORAGE (Redis, for several instances), the workers share a SQLite file
# made here, in memory (/dev/shm) where the host has it. memory:// would give each worker a
# budget of its own: with 4 workers a token would get 4 times its limit.
_limits_storage = _settings["REGISTRY_RATE_LIMIT_STORAGE"]
_own_limits_dir = None
if not _limits_storage:
    _own_limits_dir = tempfile.mkdtemp(prefix="registry-limits-",
                                       dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.environ["REGISTRY_RATE_LIMIT_STORAGE"] = f"sqlite:///{_own_limits_dir}/counters.sqlite"
elif _limits_storage.startswith("memory://") and workers > 1:
    raise SystemExit("REGISTRY_RATE_LIMIT_STORAGE=memory:// counts in each worker alone, so "
                     "each would grant the whole limit: leave it unset (the workers then share "
                     "a file) or point it at Redis")


def on_starting(server):  # noqa: ANN001, ANN201
    """Empty the metrics directory before the first worker starts."""
    os.makedirs(_metrics_dir, exist_ok=True)
    for name in os.listdir(_metrics_dir):
        os.remove(os.path.join(_metrics_dir, name))


def child_exit(server, worker):  # noqa: ANN001, ANN201
    """Let the metrics of a worker that ended stop counting as live (gauges)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ANN001, ANN201
    """Remove the metrics and rate-limit directories this configuration created."""
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
    if _own_limits_dir:
        shutil.rmtree(_own_limits_dir, ignore_errors=True)
