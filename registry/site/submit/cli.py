"""`registry-submit`: send a spreadsheet to the registry, or write the registry's template.

    registry-submit [--config FILE] [--dry-run] [--report FILE] [--date-order dmy|mdy|ymd] FILE
    registry-submit template FILE.xlsx|FILE.csv

Secrets (REGISTRY_TOKEN, REGISTRY_SITE_SECRET) come from the environment or the config file,
never from options: an option would show them in the process list.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from registry.core.template import template_csv_header, template_xlsx
from registry.site.redcap.config import DATE_ORDERS, ConfigError, SubmitConfig, load_config
from registry.site.redcap.sync import EXIT_FAILED, EXIT_OK
from registry.site.submit.run import run, write_report


def _send_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="registry-submit",
        description="De-identify a spreadsheet at the site (a REDCap export in raw codes, or the "
                    "registry's template) and send it to the registry. Secrets come from the "
                    "environment (REGISTRY_TOKEN, REGISTRY_SITE_SECRET) or the config file. "
                    "`registry-submit template FILE` writes an empty template.")
    parser.add_argument("file", type=Path, help="the .csv or .xlsx file to send")
    parser.add_argument("--config", type=Path, help="TOML settings file (may be the sync's)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything with the registry, write nothing")
    parser.add_argument("--report", type=Path, help="where to write the JSON report (default: "
                                                    "STATE_DIR/reports/submit-<time>.json)")
    parser.add_argument("--date-order", choices=DATE_ORDERS,
                        help="how the file writes dates like 03/04/2019 (default: dmy)")
    return parser.parse_args(argv)


def write_template(argv: list[str]) -> int:
    """`registry-submit template FILE`: the empty template, .xlsx or .csv by the file's name."""
    parser = argparse.ArgumentParser(prog="registry-submit template",
                                     description="Write the registry's empty template.")
    parser.add_argument("file", type=Path, help="FILE.xlsx (drop-downs, explanations) or .csv")
    path = parser.parse_args(argv).file
    if path.suffix.lower() == ".csv":
        path.write_text(template_csv_header())
    elif path.suffix.lower() == ".xlsx":
        path.write_bytes(template_xlsx())
    else:
        print("registry-submit: the template file must end in .xlsx or .csv", file=sys.stderr)
        return EXIT_FAILED
    print(f"registry-submit: template written to {path}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run once; exit 0 when all is sent, 1 when records were refused, 2 on failure."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["template"]:
        return write_template(argv[1:])
    args = _send_arguments(argv)
    try:
        config = load_config(args.config, kind=SubmitConfig, date_order=args.date_order)
    except ConfigError as error:
        print(f"registry-submit: {error}", file=sys.stderr)
        return EXIT_FAILED
    report = run(args.file, config, dry_run=args.dry_run, progress=sys.stderr.isatty())
    path = write_report(report, args.report, config.state_dir)
    summary = report.as_dict()
    counts = ", ".join(f"{name} {count}" for name, count in summary["counts"].items())
    print(f"registry-submit: {summary['status']} ({counts}); report {path}", file=sys.stderr)
    for line in summary["records"]:
        for error in line.get("errors", []):
            rows = ", ".join(map(str, line["rows"]))
            print(f"  row {rows}: {error['field']}: {error['code']} ({error['message']})",
                  file=sys.stderr)
    if report.failure:
        print(f"registry-submit: {report.failure}", file=sys.stderr)
    return report.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
