"""The console's analysis pages: survival curves with their numbers at risk, and hazard ratios
as a forest plot; and the citation block every page ends with.

As in views.py: the views parse the form, call one service with the signed-in Caller, and
render; refusals are shown on the page that asked, as the rule that applied and what would make
the question answerable.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from flask import current_app, g, render_template, request

from registry.auth import current_caller, requires
from registry.errors import BadRequest, Conflict, QueryRefused, RegistryError, TooManyRequests
from registry.permissions import Action, allowed
from registry.services.analysis import analyses, hazards
from registry.services.window import aggregates, exports, releases
from registry.services.window.catalogue import SITE
from registry.services.window.disclosure import Policy
from registry.web import presentation
from registry.web.citation import Citation, cite_release
from registry.web.views import bp, chosen_filters

ORIGIN_WORDS = {
    "remission_start": "Start of remission",
    "trastuzumab_stop": "Stop of trastuzumab (records that stopped in remission)",
    "landmark": "A landmark: stopped by then against continuing",
}
ORIGIN_AXIS = {"remission_start": "the start of remission",
               "trastuzumab_stop": "the stop of trastuzumab", "landmark": "the landmark"}
OUTCOME_WORDS = {"relapse": "Relapse (death without relapse censored)",
                 "relapse_or_death": "Relapse or death, whichever comes first"}
EVENT_WORDS = {"relapse": "relapse", "relapse_or_death": "relapse or death"}
# A refusal's rule in words (a cohort smaller than k names no rule: min_cohort_size).
RULE_WORDS = {
    "min_cohort_size": "Minimum cohort size",
    "min_level_size": "Every level needs at least k records and k events",
    "one_level": "A covariate must take two values or more",
    "events_per_parameter": "More than three events per parameter",
    "min_group_size": "Every group needs at least k records",
    "two_groups": "Two groups or more to compare",
}
FILTER_SLOTS = 2


def _policy() -> Policy:
    return Policy.from_config(current_app.config)


@bp.app_context_processor
def citation_context() -> dict[str, Any]:
    """The newest release's citation, for pages that do not show an answer of their own (only
    for roles that may read releases; looked up only when a page uses it)."""
    def newest_citation() -> Citation | None:
        caller = g.get("caller")
        if caller is None or not allowed(caller.role, Action.READ_RELEASES):
            return None
        return cite_release(releases.latest_release(caller), _policy())
    return {"newest_citation": newest_citation}


def _release_of(answer: dict[str, Any], cut: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in cut if r["id"] == answer["disclosure"]["release"]), None)


def _design() -> tuple[str, str, int | None]:
    origin = request.args.get("origin") or "remission_start"
    outcome = request.args.get("outcome") or "relapse"
    landmark = request.args.get("landmark_years", type=int) if origin == "landmark" else None
    return origin, outcome, landmark


def api_question(path: str, params: dict[str, Any], filters: dict[str, str]) -> str:
    """The API request that asks the same question (for the citation and the CSV's twin)."""
    query = {k: v for k, v in params.items() if v not in (None, "")}
    query.update(sorted(filters.items()))
    return f"GET /api/v1/analyses/{path}?{urlencode(query, safe=',')}"


def refusal_view(error: RegistryError) -> dict[str, Any]:
    """A refusal as the page shows it: the rule that applied, and what would answer it."""
    rule = error.extra.get("rule") or ("min_cohort_size" if isinstance(error, QueryRefused)
                                       else None)
    return {"title": error.title, "status": error.status, "rule": rule,
            "rule_words": RULE_WORDS.get(rule or "", rule),
            "detail": _sentence(error.detail),
            "errors": error.extra.get("errors", [])}


def _common(catalogue: list[dict[str, Any]]) -> dict[str, Any]:
    return {"catalogue": catalogue, "by_name": {d["name"]: d for d in catalogue},
            "origins": ORIGIN_WORDS, "axis": ORIGIN_AXIS, "outcomes": OUTCOME_WORDS,
            "events": EVENT_WORDS,
            "max_landmark": analyses.MAX_LANDMARK_YEARS, "max_years": analyses.MAX_YEARS,
            "filter_slots": FILTER_SLOTS, "site": SITE}


def _sentence(text: str) -> str:
    """A service's message as a sentence: capitalised, unless it begins with a code."""
    first = text.split(" ", 1)[0]
    return text if "_" in first or "=" in first else _capitalised(text)


def _csv_href(text: str) -> str:
    return "data:text/csv;charset=utf-8," + quote(text)


def _group_label(answer: dict[str, Any], group: str) -> str:
    """A curve's name: its category in words, or the landmark's two groups."""
    if answer["by"] == analyses.AT_LANDMARK:
        return f"{group.capitalize()} at {answer['landmark_years']} years"
    if answer["by"]:
        return _capitalised(presentation.category_label(group))
    return "All records"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _covariate_title(covariate: str, catalogue: list[dict[str, Any]]) -> str:
    """A forest plot's heading: the covariate's title."""
    if covariate == analyses.AT_LANDMARK:
        return "Trastuzumab at the landmark"
    entry = next((d for d in catalogue if d["name"] == covariate), None)
    return presentation.dimension_title(entry) if entry else covariate


@bp.route("/survival", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
def survival() -> Any:
    """Survival curves per group with 95% bands, numbers at risk, medians and the log-rank
    test; the landmark comparison of stopping against continuing."""
    caller = current_caller()
    catalogue = aggregates.list_dimensions(caller)["dimensions"]
    cut = releases.list_releases(caller, _policy())
    release_id = request.args.get("release", type=int)
    origin, outcome, landmark = _design()
    by = (request.args.get("by") or None) if origin != "landmark" else None
    years = request.args.get("years", type=int) or analyses.DEFAULT_YEARS
    answer = problem = None
    filters: dict[str, str] = {}
    asked = "origin" in request.args
    try:
        filters = chosen_filters()
        if asked:
            plan = analyses.design(origin, outcome, landmark,
                                   int(current_app.config["REGISTRY_MIN_REMISSION_DAYS"]))
            answer = analyses.survival(caller, plan, by, years, filters, _policy(), release_id)
    except (BadRequest, Conflict, QueryRefused, TooManyRequests) as error:
        problem = refusal_view(error)
    context: dict[str, Any] = {}
    if answer:
        params = {"release": answer["disclosure"]["release"], "origin": origin,
                  "landmark_years": landmark, "outcome": outcome, "by": by, "years": years}
        question = api_question("survival", params, filters)
        risk = analyses.numbers_at_risk(answer)
        context = {
            "risk": risk,
            "chart": {"answer": answer, "risk": risk, "event": EVENT_WORDS[outcome],
                      "origin_words": ORIGIN_AXIS[origin],
                      "labels": {g["group"]: _group_label(answer, g["group"])
                                 for g in answer["groups"]}},
            "csv_href": _csv_href(exports.survival_csv(answer)),
            "csv_filename": "survival_" + (answer["by"] or origin) + ".csv",
            "question": question,
            "citation": cite_release(_release_of(answer, cut), _policy(), question),
        }
    return render_template(
        "console/survival.html", **_common(catalogue), releases=cut, release_id=release_id,
        origin=origin, outcome=outcome, landmark=landmark, by=by, years=years,
        filters=list(filters.items()), answer=answer, problem=problem, **context), \
        problem["status"] if problem else 200


@bp.route("/hazard-ratios", methods=["GET"])
@requires(Action.QUERY_AGGREGATES)
def hazard_ratios() -> Any:
    """A Cox model on chosen covariates, as a forest plot and a table."""
    caller = current_caller()
    catalogue = aggregates.list_dimensions(caller)["dimensions"]
    cut = releases.list_releases(caller, _policy())
    release_id = request.args.get("release", type=int)
    origin, outcome, landmark = _design()
    covariates = [name for name in request.args.getlist("covariate") if name]
    answer = problem = None
    filters: dict[str, str] = {}
    try:
        filters = chosen_filters()
        if "origin" in request.args:
            plan = analyses.design(origin, outcome, landmark,
                                   int(current_app.config["REGISTRY_MIN_REMISSION_DAYS"]))
            answer = hazards.hazard_ratios(caller, plan, covariates, filters, _policy(),
                                           release_id)
    except (BadRequest, Conflict, QueryRefused, TooManyRequests) as error:
        problem = refusal_view(error)
    context: dict[str, Any] = {}
    if answer:
        params = {"release": answer["disclosure"]["release"], "origin": origin,
                  "landmark_years": landmark, "outcome": outcome,
                  "covariates": ",".join(covariates)}
        question = api_question("hazard-ratios", params, filters)
        context = {"chart": {
                       "answer": answer, "event": EVENT_WORDS[outcome],
                       "titles": {name: _covariate_title(name, catalogue)
                                  for name in answer["covariates"]},
                       "levels": {f"{row['covariate']}={row['level']}":
                                  _capitalised(presentation.category_label(row["level"]))
                                  for row in answer["levels"]}},
                   "csv_href": _csv_href(exports.hazard_ratios_csv(answer)),
                   "csv_filename": "hazard_ratios_" + "_".join(answer["covariates"]) + ".csv",
                   "question": question,
                   "citation": cite_release(_release_of(answer, cut), _policy(), question)}
    return render_template(
        "console/hazard_ratios.html", **_common(catalogue), releases=cut,
        release_id=release_id, origin=origin, outcome=outcome, landmark=landmark,
        covariates=covariates, max_covariates=analyses.MAX_COVARIATES, at_landmark=
        analyses.AT_LANDMARK, filters=list(filters.items()), answer=answer, problem=problem,
        **context), problem["status"] if problem else 200
