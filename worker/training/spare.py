"""A training child started before its job: it does the seconds of imports (torch, transformers, PEFT, TRL,
datasets) while the worker is idle, then waits for one job on stdin and runs it exactly as
``python -m worker.training.train JOB`` would. The worker keeps one ready (worker/lifecycle.py); the
spare exits when the worker goes away (its stdin closes)."""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    from worker.training import train

    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the worker stopped before giving this spare a job
    order = json.loads(line)
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os.dup2(log, 2)  # from here on, this run's log file, as a freshly started child's would be
    os.close(log)
    sys.argv = [train.__file__, order["job"]]
    return train.main(json.loads(order["job"]))


if __name__ == "__main__":
    sys.exit(main())
