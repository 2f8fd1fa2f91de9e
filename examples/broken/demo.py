"""Show the violation report for each DELIBERATELY BROKEN variant of the example client.

    python examples/broken/demo.py            # every variant
    python examples/broken/demo.py no-retry   # variants whose rule id contains "no-retry"

Each variant runs its scenario against a fresh mockflock server on free
loopback ports. The report printed below it is the one that
`assert_no_violations()` or `mockflock verify` would print for that client. The exit status is 1 if
a variant was not caught by its rule, which would be a mockflock bug.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from variants import VARIANTS  # noqa: E402

from mockflock.control import Control  # noqa: E402
from mockflock.server import MockServer, ServerOptions  # noqa: E402


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    wanted = [variant for variant in VARIANTS if not argv or any(word in variant.rule for word in argv)]
    server = MockServer(options=ServerOptions(ports={"production": 0, "development": 0}, log_level="warning")).start()
    control = Control(server)
    missed = []
    try:
        for variant in wanted:
            control.reset()
            variant.scenario(control)
            found = {violation.rule for violation in control.violations()}
            caught = variant.rule in found
            if not caught:
                missed.append(variant.name)
            print("=" * 78)
            print(f"BROKEN VARIANT: {variant.name} (must be caught by [{variant.rule}]: "
                  f"{'caught' if caught else 'NOT CAUGHT'})")
            print("=" * 78)
            print(control.report())
            print()
    finally:
        server.stop()
    if missed:
        print(f"Not caught: {', '.join(missed)}", file=sys.stderr)
        return 1
    print(f"All {len(wanted)} broken variants were caught by their rules.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
