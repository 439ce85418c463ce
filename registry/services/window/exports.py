"""Answers as files: the CSV of a count table and of the remission life tables, the same bytes
for the API and the console."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any


def csv_note(disclosure: dict[str, Any]) -> str:
    """What a reader of the CSV must know about its numbers, on every line."""
    if disclosure.get("additive") is False:
        return (f"counts perturbed by up to 2 and withheld below {disclosure['min_cell_count']};"
                " cells need not add up to totals")
    return f"counts withheld below {disclosure['min_cell_count']}"


def disclosure_header(disclosure: dict[str, Any]) -> str:
    """The disclosure block as one header value: every key, as key=value pairs."""

    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value)

    return "; ".join(f"{key}={text(value)}" for key, value in disclosure.items())


def _table_csv(header: list[str], lines: Iterable[list[Any]], disclosure: dict[str, Any]
               ) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "note"])
    note = csv_note(disclosure)
    for line in lines:
        writer.writerow(["" if value is None else value for value in line] + [note])
    return out.getvalue()


def _flag(value: Any) -> str:
    return "true" if value else "false"


def count_table_csv(table: dict[str, Any]) -> str:
    """A count table as CSV: one line per count, totals labelled (all), a note on every line."""
    dims = [table["rows"]] + ([table["columns"]] if table["columns"] else [])
    lines = table["cells"] + table["row_totals"] + table["column_totals"] + [
        {"count": table["total"], **({"suppressed": True} if table["total"] is None else {})}]
    return _table_csv(
        [*dims, "count", "suppressed"],
        ([*(line.get(d, "(all)") for d in dims), line["count"], _flag(line.get("suppressed"))]
         for line in lines), table["disclosure"])


def remission_table_csv(table: dict[str, Any]) -> str:
    """The life tables as CSV: one line per interval of each group, with the group's size."""
    lines = ([group["group"], group["count"], interval["from_year"], interval["to_year"],
              interval["at_risk"], interval["entered"], interval["relapses"],
              interval["censored"],
              interval["in_remission"],
              _flag(interval.get("suppressed") or group.get("suppressed"))]
             for group in table["groups"] for interval in group["intervals"])
    return _table_csv(
        [table["by"] or "group", "group_count", "from_year", "to_year", "at_risk", "entered",
         "relapses", "censored", "in_remission", "suppressed"], lines, table["disclosure"])


def survival_csv(answer: dict[str, Any]) -> str:
    """A survival answer as CSV: one line per interval of each group, with the group's size
    and median (the log-rank test travels in a header of its own)."""
    fields = ["at_risk", "entered", "events", "censored", "survival", "lower", "upper"]
    lines = ([group["group"], group["count"], i["from_year"], i["to_year"],
              *(i[f] for f in fields), (group["median"] or {}).get("years"),
              _flag(i.get("suppressed") or group.get("suppressed"))]
             for group in answer["groups"] for i in group["intervals"])
    return _table_csv([answer["by"] or "group", "group_count", "from_year", "to_year", *fields,
                       "median_years", "suppressed"], lines, answer["disclosure"])


def hazard_ratios_csv(answer: dict[str, Any]) -> str:
    """A hazard-ratio answer as CSV: one line per covariate level."""
    fields = ["covariate", "level", "reference", "records", "events", "hazard_ratio", "lower",
              "upper", "p_value"]
    lines = ([*(_flag(row[f]) if f == "reference" else row[f] for f in fields),
              _flag(row.get("suppressed"))] for row in answer["levels"])
    return _table_csv(fields + ["suppressed"], lines, answer["disclosure"])
