"""The console's analysis pages through Flask's test client (both databases): survival curves
with their numbers at risk, hazard ratios, their CSVs against the API's, refusals shown as their
rule, and the citation block every coordinator and steward page ends with. The same pages in a
real browser (plots, image downloads, accessibility): test_console_browser.py."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import pytest

from registry.services.analysis.analyses import numbers_at_risk
from registry.services.window.disclosure import Policy
from registry.services.window.releases import cut_release, list_releases
from registry.services.intake.synthetic import load_demo_data
from registry.services.access.tokens import issue_token
from registry.web.citation import cite
from test_console import sign_in

ROOT = Path(__file__).resolve().parents[1]
CSV_HREF = re.compile(r'href="data:text/csv;charset=utf-8,([^"]+)"')
ISLAND = re.compile(r'<script type="application/json" id="([a-z-]+)">(.*?)</script>', re.S)


@pytest.fixture()
def coordinator(client, app) -> str:  # noqa: ANN001
    """A signed-in coordinator on demo data with one release; the token."""
    load_demo_data(records_per_site=40)
    cut_release(None, "console analyses", Policy.from_config(app.config))
    token = issue_token("coordinator")[1]
    sign_in(client, token)
    return token


def api(client, path: str, token: str):  # noqa: ANN001, ANN201
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def island(page: str, name: str) -> dict:
    return json.loads(html.unescape(dict(ISLAND.findall(page))[name]))


def test_numbers_at_risk_start_where_anybody_is_at_risk():
    def group(name, at_risk):
        return {"group": name, "intervals": [{"at_risk": n} for n in at_risk]}
    answer = {"years": 4, "groups": [group("a", [0, 0, 30, 20, None]),
                                     group("b", [0, 12, 25, 14, 3])]}
    assert numbers_at_risk(answer) == {
        "years": [1, 2, 3, 4],
        "groups": [{"group": "a", "at_risk": [0, 30, 20, None]},
                   {"group": "b", "at_risk": [12, 25, 14, 3]}]}
    nobody = {"years": 1, "groups": [group("all", [0, 0])]}
    assert numbers_at_risk(nobody)["years"] == [0, 1]


def test_the_survival_page_shows_the_apis_numbers_and_csv(client, coordinator):
    question = "origin=remission_start&outcome=relapse&by=hr_status&years=10"
    page = client.get(f"/survival?{question}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    answer = api(client, f"/api/v1/analyses/survival?{question}", coordinator).get_json()
    chart = island(text, "survival-answer")
    assert chart["answer"] == json.loads(json.dumps(answer))
    # The at-risk table: one row per group, the API's at_risk from the first year held.
    first = chart["risk"]["years"][0]
    assert first > 0  # the inclusion rule: nobody is at risk at remission start
    for row, group in zip(chart["risk"]["groups"], answer["groups"]):
        assert row["at_risk"] == [i["at_risk"] for i in group["intervals"][first:]]
    table = re.search(r'<table class="at-risk" id="at-risk">(.*?)</table>', text, re.S).group(1)
    assert len(re.findall(r"<tr><th scope=\"row\">", table)) == len(answer["groups"])
    assert "Log-rank test" in text and "chi-square" in text or "not done" in text
    from_page = unquote(CSV_HREF.search(text).group(1))
    from_api = api(client, f"/api/v1/analyses/survival.csv?{question}", coordinator)
    assert from_page == from_api.get_data(as_text=True)
    assert f"release {answer['disclosure']['release']}" in text and "How to cite" in text


def test_the_landmark_page_compares_stopping_against_continuing(client, coordinator):
    page = client.get("/survival?origin=landmark&landmark_years=3&outcome=relapse")
    assert page.status_code == 200
    chart = island(page.get_data(as_text=True), "survival-answer")
    assert [g["group"] for g in chart["answer"]["groups"]] == ["continuing", "stopped"]
    assert chart["labels"]["stopped"] == "Stopped at 3 years"
    assert 'id="landmark-comparison"' in page.get_data(as_text=True)


def test_a_refused_survival_question_shows_its_rule(client, coordinator):
    page = client.get("/survival?origin=remission_start&outcome=relapse"
                      "&filter=presentation%3Dde_novo&filter=prior_adjuvant_trastuzumab%3Dyes")
    assert page.status_code == 422
    text = page.get_data(as_text=True)
    assert "Rule that applied" in text and "min_cohort_size" in text
    assert "widen the filters" in text


def test_the_hazard_ratio_page_shows_the_apis_csv(client, coordinator):
    page = client.get("/hazard-ratios?origin=remission_start&outcome=relapse"
                      "&covariate=maintenance_status&covariate=presentation")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    question = ("origin=remission_start&outcome=relapse"
                "&covariates=maintenance_status,presentation")
    answer = api(client, f"/api/v1/analyses/hazard-ratios?{question}", coordinator).get_json()
    chart = island(text, "hazard-answer")
    assert chart["answer"]["levels"] == answer["levels"]
    assert chart["levels"]["presentation=de_novo"] == "De novo"
    assert chart["titles"]["presentation"].startswith("De novo metastatic disease")
    from_api = api(client, f"/api/v1/analyses/hazard-ratios.csv?{question}", coordinator)
    assert unquote(CSV_HREF.search(text).group(1)) == from_api.get_data(as_text=True)
    rows = re.search(r'<table class="log" id="hazard-table">.*?<tbody>(.*?)</tbody>', text,
                     re.S).group(1)
    assert rows.count("<tr>") == len(answer["levels"]) and "1 (reference)" in rows


def test_a_refused_model_shows_the_rule_the_api_names(client, coordinator):
    page = client.get("/hazard-ratios?origin=landmark&landmark_years=3&outcome=relapse"
                      "&covariate=hr_status")
    refusal = api(client, "/api/v1/analyses/hazard-ratios?origin=landmark&landmark_years=3"
                  "&outcome=relapse&covariates=hr_status", coordinator).get_json()
    assert page.status_code == refusal["status"] == 422
    again = api(client, "/api/v1/analyses/hazard-ratios?origin=landmark&landmark_years=3"
                "&outcome=relapse&covariates=hr_status", coordinator).get_json()
    assert again == refusal  # asked again: the same rule and words, from the log
    text = html.unescape(page.get_data(as_text=True))
    assert f"<code>{refusal['rule']}</code>" in text and refusal["detail"][1:] in text
    empty = client.get("/hazard-ratios?origin=remission_start&outcome=relapse")
    assert empty.status_code == 400 and "name at least one covariate" in empty.get_data(
        as_text=True)


@pytest.mark.parametrize("path", ["/", "/tables", "/tables?rows=age_band", "/releases",
                                  "/survival", "/hazard-ratios"])
def test_every_coordinator_page_names_its_release_and_how_to_cite_it(client, coordinator,
                                                                     path):
    newest = list_releases()[0]["id"]  # ids are not reused on PostgreSQL
    text = client.get(path).get_data(as_text=True)
    block = re.search(r'<div class="provenance" id="provenance">(.*?)</div>', text, re.S)
    assert block is not None, path
    assert f"release {newest}" in block.group(1) and "How to cite" in block.group(1)
    assert f"HER2+ MBC prolonged-remission registry, release {newest} (cut " in html.unescape(
        block.group(1))


def test_the_citation_is_the_one_methods_md_gives():
    methods = (ROOT / "docs" / "methods.md").read_text()
    quoted = re.search(r"\n> (HER2\+.*?)\n\n", methods, re.S).group(1)
    template = " ".join(line.removeprefix("> ") for line in quoted.splitlines())
    expected = (template.replace("`<id>`", "7").replace("`<date>`", "2026-01-31")
                .replace("`<version>`", "1.0.0").replace("`GET /api", "GET /api")
                .replace("relapse`", "relapse"))
    question = "GET /api/v1/analyses/survival?origin=landmark&landmark_years=3&outcome=relapse"
    assert cite(7, datetime(2026, 1, 31, 9, 30), Policy(), question, "1.0.0").text == expected
    assert "k = 11, suppression;" in cite(7, None, Policy(perturbation=False)).text
