"""What machine a benchmark ran on, for the JSON it writes: CPU model, cores visible, load average.

``platform.processor()`` is empty on Linux (the JSONs said only "x86_64"), and the shared VMs differ by about 2x in
absolute figures for the same code, so every script records the model name from /proc/cpuinfo.
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """``{"cpu", "cores", "load_average"}`` now."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}
