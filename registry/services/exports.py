"""Answers as files: the CSV of a count table, the same for the API and the console."""

from __future__ import annotations

import csv
import io
from typing import Any


def count_table_csv(table: dict[str, Any]) -> str:
    """A count table as CSV: one line per count, totals labelled (all), suppressed flagged."""
    dims = [table["rows"]] + ([table["columns"]] if table["columns"] else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*dims, "count", "suppressed"])
    lines = table["cells"] + table["row_totals"] + table["column_totals"] + [
        {"count": table["total"], **({"suppressed": True} if table["total"] is None else {})}]
    for line in lines:
        writer.writerow([line.get(d, "(all)") for d in dims]
                        + ["" if line["count"] is None else line["count"],
                           "true" if line.get("suppressed") else "false"])
    return out.getvalue()


def disclosure_header(disclosure: dict[str, Any]) -> str:
    """The disclosure block of an answer in one header line (Registry-Disclosure)."""
    sites = disclosure["contributing_sites"]
    return (f"min_cell_count={disclosure['min_cell_count']}; "
            f"method={','.join(disclosure['method'])}; snapshot={disclosure['snapshot']}; "
            f"contributing_sites={'' if sites is None else sites}")
