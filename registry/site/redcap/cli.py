"""`registry-redcap-sync`: the command a site runs on a schedule (see README, REDCap section).

Secrets are read from the environment or the config file only: an option would show them in
the process list.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from registry.site.redcap.config import ConfigError, load_config
from registry.site.redcap.sync import EXIT_FAILED, SyncAborted, run, write_report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: registry-redcap-sync [--config FILE] [--dry-run] [--full] ..."""
    parser = argparse.ArgumentParser(
        prog="registry-redcap-sync",
        description="Send the site's REDCap records, de-identified, to the registry. Secrets "
                    "come from the environment (REDCAP_API_TOKEN, REGISTRY_TOKEN, "
                    "REGISTRY_SITE_SECRET) or the config file, never from options.")
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--dry-run", action="store_true",
                        help="write nothing, keep the watermark; report what would change")
    parser.add_argument("--full", action="store_true",
                        help="read every record again and report registry records gone from "
                             "REDCap")
    parser.add_argument("--report", type=Path, help="where to write the JSON report (default: "
                                                    "STATE_DIR/reports/sync-<time>.json)")
    parser.add_argument("--state-dir", type=Path, help="where the watermark and reports live")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run once; exit 0 when all is synced, 1 when records were refused, 2 on failure."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, state_dir=args.state_dir)
        report = run(config, dry_run=args.dry_run, full=args.full,
                     progress=sys.stderr.isatty())
    except (ConfigError, SyncAborted) as error:
        print(f"registry-redcap-sync: {error}", file=sys.stderr)
        return EXIT_FAILED
    path = write_report(report, args.report, config.state_dir)
    counts = ", ".join(f"{name} {count}" for name, count in report.as_dict()["counts"].items())
    print(f"registry-redcap-sync: {report.as_dict()['status']} ({counts}); report {path}",
          file=sys.stderr)
    if report.failure:
        print(f"registry-redcap-sync: {report.failure}", file=sys.stderr)
    return report.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
