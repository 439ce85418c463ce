"""Synthetic, valid, entirely made-up records: demo data, tests and benchmarks."""

from __future__ import annotations

import random
import string
from datetime import date
from typing import Any

from sqlalchemy import select

from registry.core import rules
from registry.core import vocabulary as v
from registry.core.fields import Code, CodeList, WholeNumber
from registry.db import unit_of_work
from registry.models import Site
from registry.models.record import CELL_KEY_MODULUS
from registry.core.record import MAX_DAY, RecordFieldsSchema, canonical
from registry.services.intake.batches import submit_batch
from registry.services.intake.record_rows import row_values
from registry.services.access.tokens import (
    Caller, add_site, issue_token, list_tokens, revoke_token,
)

# Eight made-up centres, with relative sizes (how many records each holds, per 8 average sites).
DEMO_SITES = (
    ("TOR", "Toronto demonstration centre", 1.8),
    ("MTL", "Montreal demonstration centre", 1.5),
    ("VAN", "Vancouver demonstration centre", 1.2),
    ("OTT", "Ottawa demonstration centre", 0.9),
    ("CGY", "Calgary demonstration centre", 0.8),
    ("QUE", "Quebec City demonstration centre", 0.7),
    ("HAL", "Halifax demonstration centre", 0.6),
    ("WPG", "Winnipeg demonstration centre", 0.5),
)
DEMO_TOKEN_LABEL = "demo (make run)"
# The rules that make a field required when a condition holds (`required` True: required then).
_REQUIRING_RULES = tuple(rule for rule in rules.RULES if isinstance(rule, rules.RequiredWhen)
                         or isinstance(rule, rules.OnlyWhen) and rule.required is True)
_FIELDS = RecordFieldsSchema().fields


def subject_id(rng: random.Random, site_code: str) -> str:
    """A pseudonym of the recommended form: the site code and 16 random letters."""
    return f"{site_code}-" + "".join(rng.choices(string.ascii_lowercase, k=16))


def synthetic_record(rng: random.Random, site_code: str = "DEMO",
                     min_remission_days: int = 730, *, realistic: bool = False
                     ) -> dict[str, Any]:
    """One random record that passes every rule of record.md.

    By default the codes are drawn evenly (every category well filled, as tests want);
    `realistic` draws them in the proportions of published HER2+ MBC series (the demo data)."""
    this_year = date.today().year
    if realistic:
        # More patients in recent years, as trastuzumab and pertuzumab spread; about 55%
        # ER-positive, PR mostly following ER, few unknown.
        met_dx_year = round(rng.triangular(v.FIRST_MET_DX_YEAR, this_year - 3, this_year - 5))
        er = rng.choices(v.RECEPTOR_STATUS, weights=(55, 42, 3))[0]
        pr = rng.choices(v.RECEPTOR_STATUS, weights={
            "positive": (65, 33, 2), "negative": (5, 93, 2), "unknown": (0, 40, 60)}[er])[0]
    else:
        met_dx_year = rng.randint(v.FIRST_MET_DX_YEAR, this_year - 3)
        er, pr = rng.choice(v.RECEPTOR_STATUS), rng.choice(v.RECEPTOR_STATUS)
    days_available = max(min_remission_days + 500, (this_year - met_dx_year) * 365 - 30)
    de_novo = rng.random() < 0.4
    start = rng.randint(0, 60)
    remission = start + rng.randint(60, 400)
    last = min(MAX_DAY, remission + rng.randint(
        min_remission_days, max(min_remission_days, days_available - remission)))
    record: dict[str, Any] = {
        "subject_id": subject_id(rng, site_code),
        "met_dx_year": met_dx_year,
        "age_at_met_dx": min(90, int(rng.gauss(56, 12)) if rng.random() < 0.98 else 95),
        "sex": "female" if rng.random() < 0.99 else "male",
        "her2_ihc": "3+" if rng.random() < 0.8 else "2+",
        "her2_tested_on": rng.choice(v.HER2_TESTED_ON),
        "er_status": er, "pr_status": pr,
        "histology": rng.choice(v.HISTOLOGY),
        "presentation": "de_novo" if de_novo else "recurrent",
        "prior_adjuvant_trastuzumab": "no" if de_novo else rng.choice(v.YES_NO_UNKNOWN),
        "metastatic_sites": rng.sample(v.METASTATIC_SITES, k=rng.choice((1, 1, 1, 2, 2, 3))),
        "lesion_count": rng.choice(v.LESION_COUNT),
        "ecog_at_met_dx": rng.choice((0, 0, 1, 1, 2, None)),
        "first_line_anti_her2": rng.choices(v.FIRST_LINE_ANTI_HER2, weights=(35, 60, 5))[0]
        if realistic else rng.choice(v.FIRST_LINE_ANTI_HER2),
        "first_line_chemotherapy": rng.choice(v.FIRST_LINE_CHEMOTHERAPY),
        "later_anti_her2": rng.sample(v.LATER_ANTI_HER2, k=rng.choice((0, 0, 1))),
        "local_therapy_metastases": rng.sample(v.LOCAL_THERAPY_METASTASES,
                                               k=rng.choice((0, 0, 1))),
        "endocrine_maintenance": "not_applicable" if er == pr == "negative"
        else rng.choice(("yes", "no")),
        "trastuzumab_start_day": start,
        "best_response": "complete_response" if rng.random() < 0.8 else "ned_after_local_therapy",
        "remission_start_day": remission,
        "response_assessment": rng.choice(v.RESPONSE_ASSESSMENT),
        "cardiac_event": rng.choices(v.CARDIAC_EVENT, weights=(80, 12, 3, 5))[0],
        "last_followup_day": last,
        "vital_status": "alive",
    }
    record["age_at_met_dx"] = max(18, record["age_at_met_dx"])
    record["her2_ish"] = "amplified" if record["her2_ihc"] == "2+" else rng.choice(v.HER2_ISH)
    if de_novo:
        if rng.random() < 0.5:
            record["primary_tumour_surgery"] = rng.choice(v.YES_NO)
    else:
        record["primary_dx_day"] = -rng.randint(180, 5000)
    baseline = rng.randint(50, 70)
    if rng.random() < 0.8:
        record["lvef_baseline_pct"] = baseline
        record["lvef_nadir_pct"] = baseline - rng.randint(0, 15)
    progression = None
    if rng.random() < 0.2 and last - remission > min_remission_days + 1:
        progression = rng.randint(remission + min_remission_days, last)
    record["progression_day"] = progression
    record["disease_status_last"] = "progressing" if progression else rng.choice(
        ("ned", "ned", "ned", "stable", "responding"))
    status = rng.choices(v.MAINTENANCE_STATUS, weights=(50, 35, 15))[0]
    if last - remission < 10:
        status = "ongoing"
    record["maintenance_status"] = status
    if status != "ongoing":
        stop = rng.randint(remission + 1, last - 2)
        record["trastuzumab_stop_day"] = stop
        record["discontinuation_reason"] = rng.choice(v.DISCONTINUATION_REASON)
        if status == "interrupted_resumed":
            record["trastuzumab_resume_day"] = rng.randint(stop + 1, last)
    if rng.random() < 0.05:
        record["vital_status"] = "dead"
        record["cause_of_death"] = rng.choice(v.CAUSE_OF_DEATH)
    fill_required_fields(rng, record)
    return record


def fill_required_fields(rng: random.Random, record: dict[str, Any]) -> None:
    """Give every field the schema or the rule table requires of this record, and that is not
    given, a value drawn evenly from its codes or range: a field added to the schema after the
    generator above was written keeps the demo data valid without an edit here. (A no-op for
    the fields above, which are drawn in clinical proportions; a day field that an order rule
    ties to another needs its own line above.)"""
    values = rules.Values(record, record)
    for name, field in _FIELDS.items():
        if record.get(name) is not None or not (field.required or any(
                rule.field == name and rule.when.holds(values) for rule in _REQUIRING_RULES)):
            continue
        if isinstance(field, CodeList):
            record[name] = rng.sample(field.choices, k=1)
        elif isinstance(field, Code):
            record[name] = rng.choice(field.choices)
        elif isinstance(field, WholeNumber):
            record[name] = rng.randint(field.minimum, field.upper_bound())


def load_demo_data(records_per_site: int = 600, seed: int = 2016) -> dict[str, dict[str, int]]:
    """Register the demo sites (if missing) and submit synthetic records for each: about
    `records_per_site` on average, larger centres holding more."""
    rng = random.Random(seed)
    outcome: dict[str, dict[str, int]] = {}
    for code, name, size in DEMO_SITES:
        with unit_of_work() as session:
            site_id = session.scalar(select(Site.id).where(Site.code == code))
        if site_id is None:
            site_id = add_site(code, name).id
        # Loaded by the operator, not through a token: the audit log shows no token.
        caller = Caller(token_id=None, role="submitter", site_id=site_id, site_code=code)
        batch = [synthetic_record(rng, code, realistic=True)
                 for _ in range(max(1, round(records_per_site * size)))]
        summary = {outcome: 0 for outcome in ("created", "updated", "unchanged", "rejected")}
        for start in range(0, len(batch), 1000):  # one batch holds at most 1,000 records
            result = submit_batch(caller, batch[start:start + 1000], dry_run=False,
                                  atomic=True, max_batch=1000)
            for key in summary:
                summary[key] += result["summary"][key]
        outcome[code] = summary
    return outcome


def issue_demo_tokens() -> dict[str, str]:
    """Revoke the demo tokens issued before, and issue new ones: a submitter token of the demo
    site TOR and a coordinator token. Returns them by the shell variable the README uses."""
    for token in list_tokens():
        if token.label == DEMO_TOKEN_LABEL and token.revoked_at is None:
            revoke_token(token.public_id)
    return {"TOKEN": issue_token("submitter", "TOR", DEMO_TOKEN_LABEL)[1],
            "COORDINATOR_TOKEN": issue_token("coordinator", None, DEMO_TOKEN_LABEL)[1]}


def synthetic_rows(rng: random.Random, site_ids: dict[int, str], count: int
                   ) -> list[dict[str, Any]]:
    """Column values of `count` random valid records spread over sites, for a Core insert that
    bypasses the API (benchmarks and tests of aggregates); versions and audit are not written."""
    ids = list(site_ids)
    rows = []
    for _ in range(count):
        site_id = rng.choice(ids)
        record = synthetic_record(rng, site_ids[site_id])
        subject = record.pop("subject_id")
        rows.append({**row_values(canonical(record)), "site_id": site_id, "subject_id": subject,
                     "version": 1, "cell_key": rng.randrange(CELL_KEY_MODULUS)})
    return rows
