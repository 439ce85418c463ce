"""Releases: frozen states of the data that every aggregate is computed from."""

from __future__ import annotations

from typing import Any

from flask import current_app

from registry.api import Blueprint
from registry.auth import current_caller, requires
from registry.permissions import Action
from registry.schemas.releases import ReleaseCutSchema, ReleaseListSchema, ReleaseSchema
from registry.services.window import releases
from registry.services.window.disclosure import Policy

blp = Blueprint("releases", __name__, url_prefix="/api/v1/releases",
                description="Releases of the data (cut: steward; list: coordinator, steward)")


@blp.route("", methods=["POST"])
@requires(Action.CUT_RELEASE)
@blp.arguments(ReleaseCutSchema)
@blp.response(201, ReleaseSchema)
@blp.alt_response(409, response="CONFLICT")
def cut_release(body: dict[str, Any]) -> Any:
    """Cut a release of the registry's current data

    Refused (409, saying why and when it can be cut) when fewer than k records were created,
    changed or withdrawn since the previous release, or when the previous release is younger
    than REGISTRY_RELEASE_MIN_DAYS."""
    return releases.cut_release(current_caller(), body["note"],
                                Policy.from_config(current_app.config))


@blp.route("", methods=["GET"])
@requires(Action.READ_RELEASES)
@blp.response(200, ReleaseListSchema)
def list_releases() -> Any:
    """The releases, newest first: id, time, note, record count

    Coordinators see the record count protected like the total of an unfiltered table of the
    release (the same number), and no count of changes; stewards see both exactly."""
    return {"releases": releases.list_releases(current_caller(),
                                               Policy.from_config(current_app.config))}
