"""The published data dictionary (any authenticated role)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from marshmallow import Schema, fields

from registry.api import Blueprint
from registry.auth import requires
from registry.core.redcap_dictionary import dictionary_csv
from registry.core.template import template_xlsx
from registry.core.dictionary import record_dictionary
from registry.permissions import Action

blp = Blueprint("dictionary", __name__, url_prefix="/api/v1/dictionary",
                description="The record dictionary, generated from the validating schema")


class DictionarySchema(Schema):
    """The record dictionary."""

    version = fields.String()
    time_origin = fields.String()
    inclusion = fields.Dict()
    fields_ = fields.List(fields.Dict(), data_key="fields")
    derived_fields = fields.List(fields.Dict())
    error_codes = fields.Dict(keys=fields.String(), values=fields.String())


@blp.route("", methods=["GET"])
@requires(Action.READ_DICTIONARY)
@blp.response(200, DictionarySchema)
def get_dictionary() -> Any:
    """Fields, types, allowed values, rules, code-system mappings and error codes"""
    data = record_dictionary(current_app.config["REGISTRY_MIN_REMISSION_DAYS"])
    return {**data, "fields_": data.pop("fields")}


@blp.route("/redcap.csv", methods=["GET"])
@requires(Action.READ_DICTIONARY)
@blp.response(200, {"type": "string"}, content_type="text/csv",
              description="REDCap's 18-column data dictionary CSV")
def get_redcap_dictionary() -> Any:
    """The REDCap data dictionary a site imports into its project

    Generated from the same schema the API validates with: dates are `date_ymd` identifier
    fields at the site, lists are checkboxes, and a descriptive field carries the dictionary
    version that registry-redcap-sync checks."""
    return Response(dictionary_csv(), mimetype="text/csv", headers={
        "Content-Disposition": 'attachment; filename="registry_data_dictionary.csv"'})


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@blp.route("/template.xlsx", methods=["GET"])
@requires(Action.READ_DICTIONARY)
@blp.response(200, {"type": "string", "format": "binary"}, content_type=XLSX,
              description="The spreadsheet template (.xlsx)")
def get_template() -> Any:
    """The spreadsheet template a site fills in and sends with registry-submit

    One row per patient and one column per site-side field (the REDCap dictionary's names:
    record_id, dates as *_date, a checkbox column per code of a list), drop-down lists for every
    coded field, date-formatted date cells, and a second sheet explaining each field and rule.
    Dates stay at the site: registry-submit de-identifies the file before anything is sent."""
    return Response(template_xlsx(), mimetype=XLSX, headers={
        "Content-Disposition": 'attachment; filename="registry_template.xlsx"'})
