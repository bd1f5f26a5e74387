"""Run netadv's benchmark suites: ``python benchmarks/bench.py [--suite P1,P2,...] [--quick]``.

Same as ``netadv bench``; the logic lives in ``src/netadv/bench/``. The numbers recorded in
docs/PERFORMANCE.md come from ``benchmarks/record.sh``.
"""

import sys

from netadv.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
