"""The data managers' pages of the console: My site, the site's records, one record with its
history, and withdrawal behind a confirmation.

Each page declares its action (READ_RECORDS, WRITE_RECORDS: submitters only) and calls the
services with the signed-in caller, whose site they are bound to: the site comes from the
session's token, never from the URL, so another site's record answers 404 like a missing one.
"""

from __future__ import annotations

import re
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for

from registry.auth import current_caller, requires
from registry.core.record import DAY_FIELDS
from registry.core.redcap_dictionary import code_label
from registry.errors import BadRequest, NotFound
from registry.permissions import Action
from registry.services.intake import records, site_overview
from registry.web import presentation
from registry.web.views import bp

RECORDS_PER_PAGE = 50
# How the sources of the vocabulary read on a page; a source added later reads as its code in
# words until it is named here.
SOURCE_LABELS = {"api": "API", "redcap-sync": "REDCap sync", "spreadsheet": "Spreadsheet",
                 "console": "Console"}
REASON_LABELS = {"consent_withdrawn": "Consent withdrawn",
                 "deleted_at_source": "Deleted at the source (the site's own system)",
                 "entered_in_error": "Entered in error"}


# --- how values read ----------------------------------------------------------------------------

def source_label(source: str | None) -> str:
    """Where a version came from, in words."""
    if source is None:
        return "unknown"
    return SOURCE_LABELS.get(source) or presentation.category_label(source.replace("-", "_"))


def reason_label(reason: str) -> str:
    """A withdrawal reason in words."""
    return REASON_LABELS.get(reason) or presentation.category_label(reason).capitalize()


def field_title(entry: dict[str, Any]) -> str:
    """A dictionary entry's description cut to a title: up to its first ';', capitalised."""
    text = re.split(r";", entry["description"])[0].strip()
    return text[:1].upper() + text[1:] if text else entry["name"]


def field_value(entry: dict[str, Any], value: Any) -> str:
    """A stored value in words: codes by their labels, days from day 0, units."""
    if value is None or value == []:
        return "none" if entry.get("type") == "list of codes" else "not given"
    if isinstance(value, list):
        return ", ".join(code_label(item) for item in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        unit = entry.get("unit")
        if entry["name"] in DAY_FIELDS:  # the page says once that days count from day 0
            return f"day {value}" if value >= 0 else f"day \u2212{-value} (before day 0)"
        return f"{value} {unit}" if unit and unit != "%" else f"{value}{unit or ''}"
    if entry.get("categories") is not None:  # a derived code
        return presentation.category_label(str(value))
    return code_label(str(value))


def percent(share: float | None) -> str:
    """A share as a whole percentage ('none apply' when no record has the field)."""
    return "none apply" if share is None else f"{round(100 * share)}%"


LABELS = {"source": source_label, "reason": reason_label, "title": field_title,
          "value": field_value, "percent": percent}


def _render(template: str, status: int = 200, **context: Any) -> Any:
    return render_template(template, site_labels=LABELS, **context), status


# --- pages --------------------------------------------------------------------------------------

def _due_days() -> tuple[int, str | None]:
    """The follow-up period asked for on the page, else the setting; and a problem to show."""
    default = int(current_app.config["REGISTRY_FOLLOW_UP_DUE_DAYS"])
    asked = request.args.get("due_after_days", "").strip()
    if not asked:
        return default, None
    if asked.isdigit() and 1 <= int(asked) <= site_overview.MAX_FOLLOW_UP_DUE_DAYS:
        return int(asked), None
    return default, (f"The follow-up period must be a whole number of days from 1 to "
                     f"{site_overview.MAX_FOLLOW_UP_DUE_DAYS}; the page shows the registry's "
                     f"setting, {default} days, instead.")


def _not_held(subject_id: str) -> Any:
    """A record the site does not hold: withdrawn (when and why), or never held; another
    site's record gets the same page as one never held."""
    try:
        withdrawn = site_overview.withdrawal_of(current_caller(), subject_id)
    except NotFound:
        return _render("console/site_not_found.html", 404)
    return _render("console/site_withdrawn.html", 410, withdrawn=withdrawn)


@bp.route("/site", methods=["GET"])
@requires(Action.READ_RECORDS)
def my_site() -> Any:
    """The signed-in data manager's site: records, last updates, follow-up due, withdrawals and
    completeness per optional field."""
    days, problem = _due_days()
    summary = site_overview.site_summary(current_caller(), follow_up_due_days=days)
    fields = {entry["name"]: entry for entry in site_overview.record_fields()}
    chart = [{"field": field_title(fields[item["name"]]), "name": item["name"],
              "percent": None if item["share"] is None else round(100 * item["share"], 1)}
             for item in summary["completeness"]["fields"]]
    return _render("console/site_overview.html", 400 if problem else 200, summary=summary,
                   fields=fields, chart=chart, problem=problem,
                   default_days=current_app.config["REGISTRY_FOLLOW_UP_DUE_DAYS"])


@bp.route("/site/records", methods=["GET"])
@requires(Action.READ_RECORDS)
def site_records() -> Any:
    """The site's records, a page at a time, searchable by pseudonym."""
    try:
        listing = site_overview.list_site_records(
            current_caller(), search=request.args.get("q", ""),
            order=request.args.get("order", "recent"),
            page=request.args.get("page", 1, type=int) or 1, per_page=RECORDS_PER_PAGE)
    except BadRequest:
        return redirect(url_for("console.site_records", q=request.args.get("q", "")))
    return _render("console/site_records.html", listing=listing,
                   orders={"recent": "Most recently updated first",
                           "oldest": "Least recently updated first",
                           "pseudonym": "Pseudonym, A to Z"})


@bp.route("/site/records/<subject_id>", methods=["GET"])
@requires(Action.READ_RECORDS)
def site_record(subject_id: str) -> Any:
    """One record of the site: its values, derived fields and history; a withdrawn one says
    when and why it was withdrawn."""
    try:
        shown = site_overview.record_with_history(current_caller(), subject_id)
    except NotFound:
        return _not_held(subject_id)
    return _render("console/site_record.html", **shown,
                   by_name={entry["name"]: entry for entry in shown["fields"]})


@bp.route("/site/records/<subject_id>/withdraw", methods=["GET", "POST"])
@requires(Action.WRITE_RECORDS)
def withdraw_site_record(subject_id: str) -> Any:
    """Withdraw a record, with its reason, after a confirmation page (the API's DELETE)."""
    reasons = site_overview.withdrawal_reasons()
    try:
        shown = site_overview.record_with_history(current_caller(), subject_id)
    except NotFound:
        return _not_held(subject_id)
    if request.method == "GET":
        return _render("console/site_withdraw.html", record=shown["record"], reasons=reasons,
                       history=shown["history"], problem=None)
    reason = request.form.get("reason", "")
    if reason not in reasons or request.form.get("confirm") != "withdraw":
        return _render("console/site_withdraw.html", 400, record=shown["record"],
                       reasons=reasons, history=shown["history"],
                       problem="Choose the reason for the withdrawal, then confirm.")
    records.withdraw_record(current_caller(), subject_id, reason=reason, source="console")
    # The message travels in the cookie until shown: no pseudonym in it. The page opens at its
    # top, where the message is, not at the withdrawals (which would scroll it out of sight).
    flash(f"The record was withdrawn ({reason_label(reason).lower()}). Its values and history "
          "are erased; only the withdrawal remains, listed first under Withdrawals.")
    return redirect(url_for("console.my_site"))
