"""Run the benchmarks of this checkout: `python -m benchmarks`; non-zero when a bar is missed."""

from __future__ import annotations

import sys

from benchmarks import aggregates

if __name__ == "__main__":
    sys.exit(aggregates.main(sys.argv[1:]))
