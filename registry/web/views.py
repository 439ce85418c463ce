"""The console's pages: sign-in and sign-out, home, tables, the query log.

Views parse the form, call one service with the signed-in Caller, and render. They never touch
the database session; the services own their transactions and raise domain errors, which are
shown on the page that asked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from flask import (
    Blueprint, Response, current_app, flash, g, redirect, render_template, request, session,
    url_for,
)
from flask_wtf.csrf import CSRFError

from registry import ratelimit
from registry.auth import current_caller, public, requires
from registry.errors import BadRequest, Conflict, QueryRefused, RegistryError, \
    TooManyRequests, Unauthenticated
from registry.permissions import Action, allowed
from registry.services.access import console_sessions
from registry.services.window import aggregates, releases
from registry.services.access.console_sessions import Lifetime, SessionEnded
from registry.services.window.disclosure import Policy
from registry.services.window.exports import count_table_csv
from registry.web import csrf, pages_for, presentation
from registry.web.citation import cite_release
from registry.web.session import ASSETS_PATH

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path=ASSETS_PATH)

SESSION_KEY = "sid"
# The console's pages may use only its own scripts, styles and images, never a CDN; no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
LOG_PAGE_SIZE = 50


def _lifetime() -> Lifetime:
    return Lifetime.from_config(current_app.config)


def _local_target(target: str | None) -> str | None:
    """A redirect target only if it is a path of this site (no scheme, host or '//')."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def _to_sign_in() -> Response:
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("console.sign_in", next=target))


@bp.before_request
def check_session() -> Any:
    """Every console request: CSRF token on forms, then a live session with an admitted role."""
    # Flask-WTF caches the form token in g; requests that share an app context (the test
    # client's) must not see the previous request's.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    if request.endpoint == "console.static":
        return None
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "_registry_public", False):
        return None
    key = session.get(SESSION_KEY)
    if not key:
        return _to_sign_in()
    try:
        caller = console_sessions.resume(key, _lifetime())
    except SessionEnded as ended:
        session.clear()
        flash(f"{ended.reason[:1].upper()}{ended.reason[1:]}. Sign in again to go on.")
        return _to_sign_in()
    g.caller = caller
    action = getattr(view, "_registry_action", None)
    if action is None or not allowed(caller.role, action):
        return render_template("console/error.html", title="Not for your role", status=403,
                               message=f"A {caller.role} token may not open this page."), 403
    return None


@bp.after_request
def protect_page(response: Response) -> Response:
    """Security headers on every console response; pages with data are never cached."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_context_processor
def console_context() -> dict[str, Any]:
    """What every console template may use: the caller, the pages of their role, and `may`
    (whether the permission table lets the caller perform an action, named by its value)."""
    caller = g.get("caller")
    return {"caller": caller, "nav": pages_for(caller.role) if caller else [],
            "may": lambda action: caller is not None and allowed(caller.role, Action(action)),
            "labels": presentation}


@bp.errorhandler(CSRFError)
def csrf_refused(error: CSRFError) -> Any:
    """A form without a valid CSRF token: refused, with what to do."""
    return render_template("console/error.html", title="Form refused", status=400,
                           message="This form was not sent from an open page of the console, or "
                                   "the page was open too long. Go back, reload the page and try "
                                   "again."), 400


@bp.errorhandler(RegistryError)
def registry_error(error: RegistryError) -> Any:
    """A domain error a page did not handle itself, as a page."""
    return render_template("console/error.html", title=error.title, status=error.status,
                           message=error.detail), error.status


# --- signing in and out --------------------------------------------------------------------------

@bp.route("/sign-in", methods=["GET", "POST"])
@public
def sign_in() -> Any:
    """Paste a registry token once; it is exchanged for a session and never shown again."""
    target = _local_target(request.values.get("next"))
    if request.method == "GET":
        return render_template("console/sign_in.html", next=target, error=None)
    try:
        ratelimit.refuse_spent_address()
    except TooManyRequests as refusal:
        return render_template("console/sign_in.html", next=target,
                               error="Too many sign-ins without a valid token came from your "
                                     "address. " + refusal.detail[:1].upper()
                                     + refusal.detail[1:] + "."), 429, refusal.headers
    token = request.form.get("token", "").strip()
    try:
        key, _caller = console_sessions.sign_in(token, _lifetime())
    except Unauthenticated:
        ratelimit.spend_address()
        return render_template(
            "console/sign_in.html", next=target,
            error="This token is not valid: it is mistyped, incomplete, or has been revoked. "
                  "Paste the whole token, which starts with reg_."), 401
    session.clear()  # a fresh cookie (and CSRF nonce) after sign-in: no session fixation
    session[SESSION_KEY] = key
    return redirect(target or url_for("console.home"))


@bp.route("/sign-out", methods=["POST"])
@public
def sign_out() -> Any:
    """End the session here and on the server."""
    key = session.get(SESSION_KEY)
    if key:
        console_sessions.sign_out(key)
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("console.sign_in"))


# --- pages ----------------------------------------------------------------------------------------

@bp.route("/", methods=["GET"])
@requires(Action.OPEN_CONSOLE)
def home() -> Any:
    """The pages this role may open."""
    return render_template("console/home.html")


def _catalogue() -> list[dict[str, Any]]:
    return aggregates.list_dimensions(current_caller())["dimensions"]


def chosen_filters() -> dict[str, str]:
    """The filter drop-downs of a question form (dimension=category), empty ones left out."""
    filters: dict[str, str] = {}
    for chosen in request.args.getlist("filter"):
        name, _, category = chosen.partition("=")
        if name:
            if name in filters:
                raise BadRequest("the same characteristic was chosen for both filters",
                                 errors=[{"field": "filter", "code": "same_filter",
                                          "message": "choose two different characteristics"}])
            filters[name] = category
    return filters


def _table_question() -> tuple[str | None, str | None, dict[str, str]]:
    """rows, columns and filters of the tables form (empty choices left out)."""
    return request.args.get("rows") or None, request.args.get("columns") or None, \
        chosen_filters()


def _csv_filename(table: dict[str, Any]) -> str:
    parts = [table["rows"]] + ([table["columns"]] if table["columns"] else [])
    parts += [f"{name}-{value}" for name, value in table["filters"].items()]
    return "counts_" + "_by_".join(parts[:2]) + "".join(f"_{p}" for p in parts[2:]) + ".csv"


def _counts_question(table: dict[str, Any]) -> str:
    """The API request that asks a table's question (for its citation)."""
    query = {"release": table["disclosure"]["release"], "rows": table["rows"],
             "columns": table["columns"], **table["filters"]}
    return "GET /api/v1/aggregates/counts?" + urlencode(
        {name: value for name, value in query.items() if value})


@bp.route("/tables", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
def tables() -> Any:
    """Build a one- or two-way table of pooled counts from the catalogue's drop-downs."""
    catalogue = _catalogue()
    policy = Policy.from_config(current_app.config)
    cut = releases.list_releases(current_caller(), policy)
    release_id = request.args.get("release", type=int)
    table = problem = None
    rows, columns, filters = None, None, {}
    try:
        rows, columns, filters = _table_question()
        if rows:
            table = aggregates.count_table(current_caller(), rows, columns, filters, policy,
                                           release_id)
    except (BadRequest, Conflict, QueryRefused, TooManyRequests) as error:
        problem = error
    csv_text = count_table_csv(table) if table else None
    shown = next((r for r in cut if table and r["id"] == table["disclosure"]["release"]), None)
    return render_template(
        "console/tables.html", catalogue=catalogue, rows=rows, columns=columns,
        filters=list(filters.items()), table=table, problem=problem,
        grid=presentation.count_grid(table) if table else None,
        csv_href="data:text/csv;charset=utf-8," + quote(csv_text) if csv_text else None,
        csv_filename=_csv_filename(table) if table else None,
        by_name={entry["name"]: entry for entry in catalogue},
        releases=cut, release_id=release_id,
        citation=cite_release(shown, policy, _counts_question(table)) if table else None), \
        200 if not problem else problem.status


@bp.route("/log", methods=["GET"])
@requires(Action.READ_QUERY_LOG)
def query_log() -> Any:
    """The aggregate query log, newest first, a page at a time."""
    before = request.args.get("before", type=int)
    log = aggregates.read_query_log(current_caller(), LOG_PAGE_SIZE, before)
    return render_template("console/log.html", log=log, before=before)


@bp.route("/releases", methods=["GET", "POST"])
@requires(Action.READ_RELEASES)
def release_list() -> Any:
    """The releases with their notes; stewards cut a new one here."""
    policy = Policy.from_config(current_app.config)
    problem = None
    if request.method == "POST":
        if not allowed(current_caller().role, Action.CUT_RELEASE):
            return render_template("console/error.html", title="Not for your role", status=403,
                                   message="Only a steward may cut a release."), 403
        try:
            cut = releases.cut_release(current_caller(),
                                       request.form.get("note", "").strip() or None, policy)
        except Conflict as refusal:
            problem = refusal
        else:
            flash(f"Release {cut['id']} was cut: {cut['record_count']} records, "
                  f"{cut['changes']} changed since the previous release.")
            return redirect(url_for("console.release_list"))
    outlook = (releases.release_outlook(policy)
               if allowed(current_caller().role, Action.CUT_RELEASE) else None)
    return render_template("console/releases.html", releases=releases.list_releases(
        current_caller(), policy), outlook=outlook, problem=problem), \
        problem.status if problem else 200
