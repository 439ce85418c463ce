"""The console in a real browser: Playwright driving the machine's Chromium against gunicorn.

The server runs deploy/entrypoint.sh (migrations, gunicorn with the shipped config, two workers)
on a database of its own, filled with the demo data; tokens are issued and revoked with the
operator's command line, as in production. Each page is photographed at 1366x768 into
screenshots/ (git-ignored) and checked with axe-core for serious accessibility violations.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from live import ROOT, entrypoint_server, own_database, server_environment

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = ROOT / "screenshots"
AXE = ROOT / "registry" / "web" / "static" / "vendor" / "axe.min.js"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 768}

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                                         "(.ci/run installs it)")


class Console:
    """The served console and its database: issue and revoke tokens as the operator would."""

    def __init__(self, base_url: str, database_url: str, log_path: Path) -> None:
        self.base_url = base_url
        self.database_url = database_url
        self.log_path = log_path

    def registry(self, *args: str) -> str:
        """Run the operator's `registry` command on the console's database; its output."""
        result = subprocess.run(["registry", *args],
                                env=server_environment(self.database_url,
                                                       REGISTRY_RELEASE_MIN_DAYS="0"),
                                capture_output=True, text=True, timeout=120, check=True)
        return result.stdout

    def token(self, role: str, site: str | None = None) -> str:
        """A fresh token (the last line `registry tokens issue` prints)."""
        args = ["tokens", "issue", "--role", role] + (["--site", site] if site else [])
        return self.registry(*args).strip().splitlines()[-1]

    def api_get(self, path: str, token: str) -> bytes:
        """GET an API path with a bearer token; the body."""
        request = urllib.request.Request(f"{self.base_url}{path}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """gunicorn serving the registry on loopback, on its own database with the demo data."""
    folder = tmp_path_factory.mktemp("console")
    with own_database("console", folder) as url:
        log_path = folder / "server.log"
        with entrypoint_server(url, log_path, workers=2,
                               REGISTRY_RELEASE_MIN_DAYS="0") as base_url:
            served = Console(base_url, url, log_path)
            served.registry("demo-data")
            served.registry("releases", "cut", "--note", "demo data")
            yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The machine's Chromium, headless, driven by Playwright (no browser download)."""
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page at 1366x768."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


def screenshot(page: Any, name: str) -> None:
    """The page as a person at 1366x768 sees it, and the whole of it."""
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.screenshot(path=str(SCREENSHOTS / f"{name}-full.png"), full_page=True)


def serious_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page (axe served from the package)."""
    page.add_script_tag(url="/assets/vendor/axe.min.js")
    found = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']}))
        .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                               nodes: v.nodes.map(n => n.target.join(' '))}))""")
    return [v for v in found if v["impact"] in ("serious", "critical")]


def check_page(page: Any, name: str) -> None:
    """Photograph the page and assert axe finds no serious violation on it."""
    screenshot(page, name)
    assert serious_violations(page) == []


def follow(page: Any, target: Any) -> None:
    """Click a link or button and wait for the page it leads to."""
    with page.expect_navigation():
        target.click()


def sign_in(page: Any, console: Console, token: str, path: str = "/") -> None:
    """Open a page, get sent to sign-in, paste the token, come back to the page."""
    page.goto(f"{console.base_url}{path}")
    assert "/sign-in" in page.url
    page.get_by_label("Registry token").fill(token)
    follow(page, page.get_by_role("button", name="Sign in"))


def test_coordinator_builds_a_two_way_table_and_downloads_its_csv(page, console, tmp_path):
    token = console.token("coordinator")
    csp_violations: list[str] = []
    page.on("console", lambda message: csp_violations.append(message.text)
            if "Content Security Policy" in message.text and "script" in message.text else None)
    page.goto(f"{console.base_url}/sign-in")
    check_page(page, "01-sign-in")
    sign_in(page, console, token)
    assert page.url == f"{console.base_url}/"
    assert page.get_by_role("link", name="Tables").first.is_visible()
    check_page(page, "02-home-coordinator")

    follow(page, page.get_by_role("link", name="Tables").first)
    page.get_by_label("Rows").select_option("site")  # the site is counted only on its own
    assert page.get_by_label("Columns (optional)").is_disabled()
    page.get_by_label("Rows").select_option("hr_status")
    assert page.locator("#columns option[value=hr_status]").is_disabled()
    assert page.locator("#filter-1 option[value='hr_status=positive']").is_disabled()
    page.get_by_label("Columns (optional)").select_option("maintenance_status")
    follow(page, page.get_by_role("button", name="Show the table"))
    table = page.locator("table#counts")
    assert table.is_visible()
    # three hormone-receptor rows and the totals row; three maintenance columns and the total
    assert table.locator("tbody tr").count() == 3
    assert table.locator("tfoot tr th").inner_text() == "Total"
    assert table.locator("thead tr").last.locator("th").count() == 1 + 3 + 1
    assert page.locator("#provenance").get_by_text("How to cite").is_visible()
    assert "perturbation" in page.locator(".disclosure").inner_text()
    check_page(page, "03-tables-two-way")

    # The chart, drawn by Observable Plot from the package's assets, and its SVG download.
    chart = page.locator("#table-figure svg[role=img]")
    chart.wait_for()
    assert chart.locator("rect").count() >= 5  # a bar per published cell at least
    with page.expect_download() as svg_info:
        page.get_by_role("link", name="Download the chart as SVG").click()
    assert Path(svg_info.value.path()).read_text().startswith("<svg")
    page.get_by_role("link", name="Download the chart as PNG").wait_for()
    assert csp_violations == [], csp_violations

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download this table as CSV").click()
    downloaded = Path(download_info.value.path()).read_bytes()
    from_api = console.api_get("/api/v1/aggregates/counts?rows=hr_status"
                               "&columns=maintenance_status&format=csv", token)
    assert downloaded == from_api
    assert download_info.value.suggested_filename.endswith(".csv")

    # The token is in no page, no URL and no server log line.
    assert token not in page.content() and token not in page.url
    assert token not in console.log_path.read_text()


def test_a_withheld_count_explains_itself_on_focus(page, console):
    sign_in(page, console, console.token("coordinator"),
            "/tables?rows=remission_band&filter=histology%3Dother"
            "&filter=cardiac_event%3Dheart_failure")
    withheld = page.locator("table#counts .suppressed")
    assert withheld.count() > 0, "the demo data give this table small cells, whatever the noise"
    first = withheld.first
    assert first.inner_text().startswith("fewer than 11")
    tip = first.locator(".tip")
    assert not tip.is_visible()
    first.focus()
    assert tip.is_visible()
    assert first.get_attribute("aria-describedby") == "why-withheld"
    screenshot(page, "04-tables-withheld-focus")


def test_a_one_way_table_with_a_filter_and_a_refusal(page, console):
    sign_in(page, console, console.token("coordinator"), "/tables")
    page.get_by_label("Rows").select_option("remission_band")
    page.get_by_label("Filter 1").select_option("presentation=de_novo")
    follow(page, page.get_by_role("button", name="Show the table"))
    assert page.locator("table#counts tbody tr").count() == 4
    assert "de novo" in page.locator(".result").inner_text()
    check_page(page, "05-tables-one-way-filtered")

    # Two filters no record meets (de novo disease excludes adjuvant trastuzumab): the cohort
    # is smaller than k, and the page says what would help.
    page.get_by_label("Filter 1").select_option("presentation=de_novo")
    page.get_by_label("Filter 2").select_option("prior_adjuvant_trastuzumab=yes")
    follow(page, page.get_by_role("button", name="Show the table"))
    alert = page.get_by_role("alert")
    assert "fewer than 11" in alert.inner_text() and "widen" in alert.inner_text().lower()
    check_page(page, "06-tables-refused")


def test_steward_reads_the_query_log(page, console):
    coordinator = console.token("coordinator")
    console.api_get("/api/v1/aggregates/counts?rows=age_band", coordinator)
    sign_in(page, console, console.token("steward"))
    follow(page, page.get_by_role("navigation", name="Pages").get_by_role("link",
                                                                      name="Query log"))
    log = page.locator("table#query-log")
    assert log.is_visible()
    public_id = coordinator.split("_")[1]
    first_row = log.locator("tbody tr").first
    assert public_id in first_row.inner_text() and "age_band" in first_row.inner_text()
    check_page(page, "07-query-log")


def test_a_page_without_a_session_sends_to_sign_in_and_back(page, console):
    page.goto(f"{console.base_url}/tables?rows=age_band")
    assert re.search(r"/sign-in\?next=", page.url)
    page.get_by_label("Registry token").fill(console.token("coordinator"))
    follow(page, page.get_by_role("button", name="Sign in"))
    page.wait_for_load_state()
    assert page.url == f"{console.base_url}/tables?rows=age_band"
    assert page.locator("table#counts").is_visible()


def test_a_wrong_token_is_refused_without_echo(page, console):
    page.goto(f"{console.base_url}/sign-in")
    wrong = "reg_abcdefghijkl_" + "x" * 43
    page.get_by_label("Registry token").fill(wrong)
    follow(page, page.get_by_role("button", name="Sign in"))
    assert "not valid" in page.get_by_role("alert").inner_text()
    assert wrong not in page.content()
    check_page(page, "08-sign-in-refused")


def test_a_form_without_its_csrf_token_is_refused(page, console):
    sign_in(page, console, console.token("coordinator"))
    page.evaluate("document.querySelectorAll('input[name=csrf_token]')"
                  ".forEach(input => input.remove())")
    follow(page, page.get_by_role("button", name="Sign out"))
    assert page.get_by_role("heading", name="Form refused").is_visible()
    screenshot(page, "09-csrf-refused")
    page.goto(f"{console.base_url}/")  # the refused sign-out did not sign out
    assert "/sign-in" not in page.url
    follow(page, page.get_by_role("button", name="Sign out"))  # with its token, it does
    assert "/sign-in" in page.url and page.get_by_text("You are signed out").is_visible()
    page.goto(f"{console.base_url}/tables")
    assert "/sign-in" in page.url


def test_a_revoked_token_loses_its_session(page, console):
    token = console.token("coordinator")
    sign_in(page, console, token)
    assert page.url == f"{console.base_url}/"
    console.registry("tokens", "revoke", token.split("_")[1])
    page.goto(f"{console.base_url}/tables")
    assert "/sign-in" in page.url
    assert "revoked" in page.get_by_role("status").inner_text()


def test_a_submitter_cannot_open_coordinator_pages(page, console):
    site = console.registry("sites", "list").split()[0]
    sign_in(page, console, console.token("submitter", site))
    assert page.get_by_text(f"of site {site}").is_visible()
    assert page.get_by_role("link", name="Tables").count() == 0
    check_page(page, "10-home-submitter")
    for path in ("/tables", "/log"):
        response = page.goto(f"{console.base_url}{path}")
        assert response.status == 403
        assert page.get_by_role("heading", name="Not for your role").is_visible()


def test_a_coordinator_cannot_read_the_log_and_the_api_ignores_the_cookie(page, console):
    sign_in(page, console, console.token("coordinator"))
    assert page.get_by_role("link", name="Query log").count() == 0
    assert page.goto(f"{console.base_url}/log").status == 403
    # The API takes bearer tokens only: the console's cookie opens nothing there.
    answer = page.request.get(f"{console.base_url}/api/v1/aggregates/dimensions")
    assert answer.status == 401


def test_steward_cuts_a_release_under_the_k_change_rule(page, console):
    sign_in(page, console, console.token("steward"))
    follow(page, page.get_by_role("navigation", name="Pages").get_by_role("link",
                                                                      name="Releases"))
    assert "at least 11" in page.locator("#k-change-rule").inner_text()
    assert "0 records created, changed or withdrawn" in page.locator("#changes-since").inner_text()
    follow(page, page.get_by_role("button", name="Cut a release now"))  # refused: no changes
    assert "needs at least 11" in page.get_by_role("alert").inner_text()
    before = page.locator("table#releases tbody tr").count()

    console.registry("demo-data", "--seed", "7", "--records-per-site", "5")  # 5 new per site
    page.goto(f"{console.base_url}/releases")
    changed = re.search(r"(\d+) records created", page.locator("#changes-since").inner_text())
    assert changed is not None and int(changed.group(1)) >= 11
    page.get_by_label("Note").fill("console test release")
    follow(page, page.get_by_role("button", name="Cut a release now"))
    assert "was cut" in page.get_by_role("status").inner_text()
    releases = page.locator("table#releases tbody tr")
    assert releases.count() == before + 1
    assert "console test release" in releases.first.inner_text()
    check_page(page, "13-releases-steward")


def test_tables_name_their_release(page, console):
    sign_in(page, console, console.token("coordinator"), "/tables?rows=age_band")
    assert page.get_by_label("Release").locator("option").count() >= 1
    assert "release" in page.locator("#provenance").inner_text().lower()
    follow(page, page.get_by_role("navigation", name="Pages").get_by_role("link",
                                                                      name="Releases"))
    assert page.get_by_role("button", name="Cut a release now").count() == 0
    check_page(page, "14-releases-coordinator")


# --- the analysis pages: survival curves and hazard ratios -----------------------------------

def at_risk_numbers(page: Any) -> list[list[str]]:
    """The at-risk table under the plot: per group, its numbers as shown."""
    rows = page.locator("table#at-risk tbody tr")
    return [[cell.inner_text() for cell in rows.nth(i).locator("td").all()]
            for i in range(rows.count())]


def test_coordinator_draws_survival_curves_with_their_numbers_at_risk(page, console):
    token = console.token("coordinator")
    sign_in(page, console, token)
    follow(page, page.get_by_role("navigation", name="Pages").get_by_role("link",
                                                                      name="Survival"))
    check_page(page, "15-survival-empty")
    assert page.get_by_label("Landmark (years after remission start)").is_hidden()
    page.get_by_label("One curve per", exact=True).select_option("maintenance_status")
    assert "maintenance" in page.locator("#by-meaning").inner_text().lower()
    follow(page, page.get_by_role("button", name="Draw the curves"))

    plot = page.locator("#survival-figure svg[role=img]")
    plot.wait_for()
    # a line and a confidence band (both paths) per group
    assert plot.locator("path").count() >= 2 * 3
    question = ("origin=remission_start&outcome=relapse&by=maintenance_status&years=10")
    answer = json.loads(console.api_get(f"/api/v1/analyses/survival?{question}", token))
    shown = at_risk_numbers(page)
    first = int(page.locator("table#at-risk thead th").nth(1).inner_text())
    assert len(shown) == len(answer["groups"]) == 3
    for numbers, group in zip(shown, answer["groups"]):
        expected = [str(i["at_risk"]) if i["at_risk"] is not None else "fewer than 11"
                    for i in group["intervals"][first:]]
        assert numbers == expected
    assert "median" in page.locator("#medians").inner_text()
    assert "Log-rank test" in page.locator("#logrank").inner_text()
    assert "How to cite" in page.locator("#provenance").inner_text()
    check_page(page, "16-survival-by-maintenance")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the life table as CSV").click()
    downloaded = Path(download_info.value.path()).read_bytes()
    assert downloaded == console.api_get(f"/api/v1/analyses/survival.csv?{question}", token)
    with page.expect_download() as svg_info:
        page.get_by_role("link", name="Download the plot as SVG").click()
    image = Path(svg_info.value.path()).read_text()
    assert image.startswith("<svg") and "Number at risk" in image
    page.get_by_role("link", name="Download the plot as PNG").wait_for()
    with page.expect_download() as png_info:
        page.get_by_role("link", name="Download the plot as PNG").click()
    assert Path(png_info.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_landmark_comparison_and_a_refused_survival_question(page, console):
    sign_in(page, console, console.token("coordinator"), "/survival")
    follow(page, page.get_by_role("link", name="stopping trastuzumab against continuing, "
                                               "3 years into remission"))
    assert page.get_by_label("One curve per", exact=True).is_disabled()
    rows = page.locator("table#at-risk tbody th")
    assert [rows.nth(i).inner_text() for i in range(rows.count())] == [
        "Continuing at 3 years", "Stopped at 3 years"]
    assert "immortal-time" in page.locator("#landmark-comparison").inner_text()
    page.locator("#survival-figure svg[role=img]").wait_for()
    check_page(page, "17-survival-landmark")

    page.get_by_label("Time zero").select_option("remission_start")
    page.get_by_label("Filter 1").select_option("presentation=de_novo")
    page.get_by_label("Filter 2").select_option("prior_adjuvant_trastuzumab=yes")
    follow(page, page.get_by_role("button", name="Draw the curves"))
    alert = page.get_by_role("alert")
    assert "Rule that applied" in alert.inner_text() and "min_cohort_size" in alert.inner_text()
    assert "widen the filters" in alert.inner_text()
    check_page(page, "18-survival-refused")


def test_coordinator_fits_hazard_ratios_as_a_forest_plot(page, console):
    token = console.token("coordinator")
    sign_in(page, console, token, "/hazard-ratios")
    check_page(page, "19-hazard-ratios-empty")
    page.locator("input[name=covariate][value=maintenance_status]").check()
    page.locator("input[name=covariate][value=presentation]").check()
    follow(page, page.get_by_role("button", name="Fit the model"))
    forest = page.locator("#forest-figure svg[role=img]")
    forest.wait_for()
    # the checkboxes send the covariates in the catalogue's order
    question = ("origin=remission_start&outcome=relapse"
                "&covariates=presentation,maintenance_status")
    answer = json.loads(console.api_get(f"/api/v1/analyses/hazard-ratios?{question}", token))
    rows = page.locator("table#hazard-table tbody tr")
    assert rows.count() == len(answer["levels"])
    for i, level in enumerate(answer["levels"]):
        if level["hazard_ratio"] is not None and not level["reference"]:
            assert f"{level['hazard_ratio']:.2f}" in rows.nth(i).inner_text()
    estimated = sum(1 for level in answer["levels"]
                    if not level["reference"] and level["hazard_ratio"] is not None)
    assert forest.locator("line").count() >= estimated  # an interval per estimated level
    check_page(page, "20-hazard-ratios")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the hazard ratios as CSV").click()
    assert Path(download_info.value.path()).read_bytes() == console.api_get(
        f"/api/v1/analyses/hazard-ratios.csv?{question}", token)
    with page.expect_download() as svg_info:
        page.get_by_role("link", name="Download the forest plot as SVG").click()
    assert Path(svg_info.value.path()).read_text().startswith("<svg")

    # De novo disease excludes adjuvant trastuzumab: a covariate without two large levels.
    page.locator("input[name=covariate][value=presentation]").uncheck()
    page.locator("input[name=covariate][value=maintenance_status]").uncheck()
    page.locator("input[name=covariate][value=prior_adjuvant_trastuzumab]").check()
    page.get_by_label("Filter 1").select_option("presentation=de_novo")
    follow(page, page.get_by_role("button", name="Fit the model"))
    alert = page.get_by_role("alert")
    request = urllib.request.Request(
        f"{console.base_url}/api/v1/analyses/hazard-ratios?origin=remission_start"
        "&outcome=relapse&covariates=prior_adjuvant_trastuzumab&presentation=de_novo",
        headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    rule = json.loads(refused.value.read())["rule"]
    assert "Rule that applied" in alert.inner_text() and f"({rule})" in alert.inner_text()
    check_page(page, "21-hazard-ratios-refused")


def test_every_coordinator_page_names_its_release(page, console):
    sign_in(page, console, console.token("steward"))
    for path in ("/", "/tables", "/survival", "/hazard-ratios", "/releases", "/log"):
        page.goto(f"{console.base_url}{path}")
        block = page.locator("#provenance")
        assert "How to cite" in block.inner_text(), path
        assert "HER2+ MBC prolonged-remission registry, release" in block.inner_text(), path
