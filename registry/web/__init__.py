"""The web console at `/`: Jinja pages for people, calling the same services as the API.

Sign-in exchanges a registry token, pasted once, for a server-side session (see
services/access/console_sessions.py and web/session.py). Every page declares the action it
performs with auth.requires (or auth.public), exactly as the API's endpoints do; a page with
neither is refused. Pages are listed once in PAGES, which builds the navigation: a role sees the
pages whose action the permission table (registry/permissions.py) allows it, so no role is named
here."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app
from flask_wtf.csrf import CSRFProtect

from registry.permissions import allowed
from registry.web.session import COOKIE_NAME, ConsoleSessionInterface

csrf = CSRFProtect()


@dataclass(frozen=True)
class Page:
    """An entry of the console's navigation: endpoint, title, what it is for."""

    endpoint: str
    title: str
    summary: str


PAGES: tuple[Page, ...] = (
    Page("console.tables", "Tables",
         "Pooled counts by one or two characteristics, with margins, as a table and as CSV."),
    Page("console.survival", "Survival",
         "Survival curves per group with 95% bands and the numbers at risk, medians, the "
         "log-rank test, and the landmark comparison of stopping trastuzumab against "
         "continuing."),
    Page("console.hazard_ratios", "Hazard ratios",
         "Hazard ratios from a Cox model on the characteristics you choose, as a forest plot "
         "and a table."),
    Page("console.release_list", "Releases",
         "The frozen, numbered states of the data that answers come from, with their notes; "
         "stewards cut new ones."),
    Page("console.query_log", "Query log",
         "Every question asked of the pooled data: who, when, what, and what was released."),
    # The data managers' pages (issue 17): their own site only.
    Page("console.my_site", "My site",
         "Your site's records at a glance: last updates and where they came from, records due "
         "for follow-up, withdrawals, and how complete the optional fields are."),
    Page("console.site_records", "Records",
         "Every record of your site, searchable by pseudonym; open one for its values, history "
         "and withdrawal."),
    Page("console.upload", "Upload a spreadsheet",
         "Drop the registry's template or a REDCap export: it is de-identified in this browser "
         "(no date or record id leaves it), checked with a dry run, then sent."),
)


def pages_for(role: str) -> list[Page]:
    """The pages a role may open (the action each page's view declares), in navigation order."""
    return [page for page in PAGES if allowed(role, current_app.view_functions[
        page.endpoint]._registry_action)]


def init_app(app: Flask) -> None:
    """Register the console: its cookie session, CSRF protection and pages."""
    # analysis_views, site_views and upload_views add their routes to views.bp
    from registry.web import analysis_views, site_views, upload_views, views  # noqa: F401

    app.config["SESSION_COOKIE_NAME"] = COOKIE_NAME
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    # Checked by the console's own hook, for its forms only: the API takes no cookies, so it
    # needs no CSRF token.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.session_interface = ConsoleSessionInterface()
    csrf.init_app(app)
    app.register_blueprint(views.bp)
