"""Failpoints for the fault tests (the idea of etcd's gofail and TiKV's fail-rs): with
``REFINERY_FAILPOINTS="kill_at_step=5,kill_in_save=4"`` the training child kills itself with SIGKILL at that
point, exactly as an OOM killer or a pulled plug would. ``oom_at_step=N`` raises the out-of-memory error
torch raises on a GPU; ``disk_full_at_step=N`` lowers the child's file-size limit to nothing, so the next
file it writes (the checkpoint of that step) fails with the error a full disk gives. ``wait_at_step=N`` holds
the child at that step until the file named by ``REFINERY_FAILPOINTS_RELEASE`` exists (at most two minutes),
so a test can change the world around a job in the middle of it. With
``REFINERY_FAILPOINTS_ONCE=<path>`` only the first attempt fails (the file records that it did). Unset, as in
production, a check is a dictionary lookup."""

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
    if name.startswith("oom"):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory (failpoint)")
    if name.startswith("wait"):
        import time

        release = os.environ.get("REFINERY_FAILPOINTS_RELEASE", "")
        deadline = time.monotonic() + 120
        while release and not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.1)
        return
    if name.startswith("disk_full"):
        import resource

        # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG like a full disk's ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return
    os.kill(os.getpid(), signal.SIGKILL)
