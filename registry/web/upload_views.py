"""The upload page (issue 17): a data manager drops a spreadsheet, which is de-identified in the
browser exactly as registry-submit does it, checked, dry-run and sent in batches.

Nothing identifying reaches these views: the page converts the file with the description of
the site-side fields the server publishes (`site-fields.json`, from core/site_fields.py), keeps
the site secret in its own memory, and sends only de-identified records. Its JSON endpoints sit
behind the console's session and CSRF header (X-CSRFToken) and call the same services as the
API's (services/intake/uploads.py, services/intake/batches.py); the API itself stays bearer-only.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, render_template, request

from registry.auth import current_caller, requires
from registry.core.vocabulary import SOURCES
from registry.errors import BadRequest, RegistryError, problem_response
from registry.jsonbody import load_json_body
from registry.observability import count_records
from registry.permissions import Action
from registry.services.intake import batches, uploads
from registry.web.views import bp

SOURCE_HEADER = "X-Registry-Source"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _problem(error: RegistryError) -> Response:
    return problem_response(error.status, error.slug, error.title, error.detail, error.headers,
                            **error.extra)


def _records() -> list[Any]:
    """The `records` list of the JSON body (400, naming the field, when it is not one; 400
    duplicate_key when an object names a key twice, as the API answers)."""
    try:
        body = load_json_body(request.get_data(cache=True)) if request.is_json else None
    except (ValueError, RecursionError):
        body = None
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        raise BadRequest("the body must be a JSON object with a list of records",
                         errors=[{"field": "records", "code": "invalid_type",
                                  "message": "must be a list of records"}])
    return records


@bp.route("/upload", methods=["GET"])
@requires(Action.WRITE_RECORDS)
def upload() -> Any:
    """Drop a spreadsheet; it is de-identified in this browser, checked, then sent."""
    return render_template("console/upload_page.html")


@bp.route("/upload/site-fields.json", methods=["GET"])
@requires(Action.WRITE_RECORDS)
def upload_site_fields() -> Any:
    """The site-side fields and the edge de-identification's rules (what the page converts by)."""
    return jsonify(uploads.describe_site_fields(current_caller(),
                                                current_app.config["REGISTRY_MAX_BATCH"]))


@bp.route("/upload/template.xlsx", methods=["GET"])
@requires(Action.WRITE_RECORDS)
def upload_template() -> Any:
    """The registry's empty template, as GET /api/v1/dictionary/template.xlsx gives it."""
    return Response(uploads.template_file(current_caller()), mimetype=XLSX, headers={
        "Content-Disposition": "attachment; filename=registry_template.xlsx"})


@bp.route("/upload/check", methods=["POST"])
@requires(Action.WRITE_RECORDS)
def upload_check() -> Any:
    """Each de-identified record's problems under the registry's rules (nothing is stored)."""
    try:
        found = uploads.check_records(current_caller(), _records(),
                                      current_app.config["REGISTRY_MAX_BATCH"])
    except RegistryError as error:
        return _problem(error)
    return jsonify({"results": [{"errors": errors} for errors in found]})


@bp.route("/upload/batch", methods=["POST"])
@requires(Action.WRITE_RECORDS)
def upload_batch() -> Any:
    """A batch, as POST /api/v1/records/batch takes it (dry_run=true writes nothing)."""
    try:
        source = request.headers.get(SOURCE_HEADER, "api")
        if source not in SOURCES:
            raise BadRequest("unknown source", errors=[{
                "field": SOURCE_HEADER, "code": "invalid_choice",
                "message": "must be one of: " + ", ".join(SOURCES)}])
        dry_run = request.args.get("dry_run", "false")
        if dry_run not in ("true", "false"):
            raise BadRequest("dry_run must be true or false", errors=[{
                "field": "dry_run", "code": "invalid_choice", "message": "must be true or false"}])
        result = batches.submit_batch(
            current_caller(), _records(), dry_run=dry_run == "true", atomic=False,
            max_batch=current_app.config["REGISTRY_MAX_BATCH"], source=source)
    except RegistryError as error:
        return _problem(error)
    if dry_run == "false":
        count_records("batch", result["summary"])
    return jsonify(result)
