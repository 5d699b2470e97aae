"""Run one queued run in the foreground, as a worker would: ``python -m worker.execute RUN_ID``.

The operator commands (``refinery adapters export --merged``) start it as a process of its own, so the web
package never imports the worker's."""

from __future__ import annotations

import sys

from worker import lifecycle


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m worker.execute RUN_ID", file=sys.stderr)
        return 2
    lifecycle.execute(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
