"""Failpoints for the fault tests (the idea of etcd's gofail and TiKV's fail-rs): with
``REFINERY_FAILPOINTS="kill_at_step=5,kill_in_save=4"`` the training child kills itself with SIGKILL at that
point, exactly as an OOM killer or a pulled plug would. With ``REFINERY_FAILPOINTS_ONCE=<path>`` only the
first attempt dies (the file records that it did). Unset, as in production, a check is a dictionary lookup."""

from __future__ import annotations

import os
import signal


def _parse(raw: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in raw.split(","):
        name, _, step = item.partition("=")
        if name.strip() and step.strip().isdigit():
            points[name.strip()] = int(step)
    return points


ACTIVE = _parse(os.environ.get("REFINERY_FAILPOINTS", ""))


def check(name: str, step: int) -> None:
    if ACTIVE.get(name) != step:
        return
    once = os.environ.get("REFINERY_FAILPOINTS_ONCE")
    if once:
        if os.path.exists(once):
            return
        with open(once, "w") as marker:
            marker.write(f"{name}={step}\n")
    os.kill(os.getpid(), signal.SIGKILL)
