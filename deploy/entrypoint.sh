#!/bin/sh
# Container entrypoint (also usable on a plain server): migrate the database to the newest
# schema, then replace this shell with gunicorn so that it receives the stop signal directly.
# Extra arguments are passed to gunicorn (e.g. --bind 127.0.0.1:9000).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
: "${DATABASE_URL:?set DATABASE_URL, e.g. postgresql+psycopg://registry:secret@db:5432/registry}"

registry db upgrade
exec gunicorn --config "${REGISTRY_GUNICORN_CONFIG:-$here/gunicorn.conf.py}" "$@" \
    "registry:create_app()"
