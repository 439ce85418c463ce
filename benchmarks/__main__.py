"""Run every benchmark of quality.md that this checkout has: `python -m benchmarks [names]`.

Each benchmark module has main(argv) -> exit status; this runs them in turn and exits non-zero
if any missed its bar.
"""

from __future__ import annotations

import importlib
import sys

# name -> module; a module missing from this checkout is skipped with a note.
BENCHMARKS = {
    "ingest": "benchmarks.ingest",  # B1, B2
    "aggregates": "benchmarks.aggregates",  # B4
    "analyses": "benchmarks.analyses",  # B7
    "redcap": "benchmarks.redcap_sync",  # B5
    "load": "benchmarks.load",  # B3, B6
    "window": "benchmarks.window",  # privacy.md 2.3, measured
}


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all by default)."""
    names = argv or list(BENCHMARKS)
    failed = []
    for name in names:
        try:
            module = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as error:
            if error.name != BENCHMARKS[name]:
                raise
            print(f"== {name}: not in this checkout, skipped")
            continue
        print(f"== {name}")
        if module.main([]) != 0:
            failed.append(name)
    if failed:
        print("missed a bar: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
