"""The software and hardware a command actually ran on, as it saw them at run time.

Training and evaluation record this in run.json / metrics.json; the archive collects it per
environment (train, analysis), so an archive says which packages produced its numbers even when
the image behind a digest can no longer be pulled. Standard library only (torch is consulted only
when the command already imported it, so the analysis image needs none).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import distributions

from lorarank import numerics


def packages() -> dict[str, str]:
    """Every installed distribution, name (lower case) -> version, sorted by name."""
    seen = {}
    for d in distributions():
        name = (d.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            seen.setdefault(name, d.version)
    return dict(sorted(seen.items()))


def container() -> dict | None:
    """The Apptainer/Singularity image this process runs in (the runtime sets these), or None on the host."""
    image = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    if not image:
        return None
    return {"image": image, "name": os.environ.get("APPTAINER_NAME") or os.environ.get("SINGULARITY_NAME")}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def hardware() -> dict:
    hw = {"machine": platform.machine(), "cpu": _cpu_model(), "cpus": len(os.sched_getaffinity(0))}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        hw["cuda"] = torch.version.cuda
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return hw


def describe() -> dict:
    """Python, platform, container, hardware, the numerics profile (where a compute command applied one)
    and every package version of this process."""
    return {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "container": container(), "hardware": hardware(), "numerics": numerics.record(),
            "packages": packages()}
