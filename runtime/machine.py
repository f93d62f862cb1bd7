"""What this machine is, for the runtime's defaults and for ``runtime.tune``'s records: the
CPU's name, generation and instruction-set flags, the physical cores this process may use,
and a fingerprint (CPU, generation, flags, cores, library versions) that says whether a
tuning result written on one machine applies to another.

Linux reads ``/proc/cpuinfo`` and the sysfs topology; elsewhere the name comes from
``platform`` and the flags are empty (BF16 then counts as absent, which only ever keeps the
runtime on FP32).
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

__all__ = ["cpu_name", "cpu_model", "cpu_flags", "physical_cores", "has_bf16", "has_fp16", "library_versions",
           "fingerprint", "TRACKED_FLAGS"]

# The flags that change which kernels the backends run (and so their speed and rounding);
# the fingerprint keeps only these, so a kernel update's cosmetic flags do not void a tuning.
TRACKED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                 "amx_int8", "amx_fp16", "avx_vnni", "asimd", "sve", "bf16", "i8mm")
_CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty where there is none)."""
    try:
        text = _CPUINFO.read_text(errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_name() -> str:
    """The CPU's marketing name ("AMD EPYC 9R14", "Intel(R) Xeon(R) ..."), or the platform's."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine() or "unknown"


# /proc/cpuinfo's numbers for a CPU's make and generation: x86, then Arm.
_MODEL_KEYS = ("vendor_id", "cpu family", "model", "stepping",
               "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "CPU revision")


def cpu_model() -> str:
    """The CPU's make and generation as the kernel numbers them ("AuthenticAMD cpu family 26
    model 2 stepping 1"; on Arm the implementer, architecture, variant, part and revision),
    or "" where /proc/cpuinfo has none. Cloud VMs often mask the name: two hosts both called
    "AMD EPYC" with the same tracked flags were a Zen 4 (family 25) and a Zen 5 (family 26),
    whose kernels rank the backends differently; these numbers tell them apart."""
    info = _cpuinfo()
    parts = []
    for key in _MODEL_KEYS:
        value = info.get(key)
        if value:
            parts.append(value if key == "vendor_id" else f"{key} {value}")
    return " ".join(parts)


def cpu_flags() -> frozenset[str]:
    """Every instruction-set flag the kernel reports for the CPU (x86 ``flags``, Arm ``Features``)."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def has_bf16() -> bool:
    """True where the CPU computes BF16 natively (AVX-512 BF16, AMX-BF16, or Arm's BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def has_fp16() -> bool:
    """True where the CPU computes FP16 natively (AVX-512 FP16, AMX-FP16, Arm's FP16 arithmetic)."""
    return bool(cpu_flags() & {"avx512_fp16", "amx_fp16", "asimdhp"})


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on: hyper-threads of one core count
    once (sysfs ``thread_siblings_list``); at least 1. Where the topology is unreadable, the
    allowed logical CPUs."""
    cpus = _allowed_cpus()
    cores: set[str] = set()
    for cpu in cpus:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(path.read_text().strip())
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def library_versions() -> dict[str, str]:
    """Versions of the inference libraries installed (without importing them)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def fingerprint() -> dict[str, object]:
    """The machine as a tuning result depends on it: CPU name and generation, tracked flags,
    physical cores usable here, OS and architecture, library versions. Equal fingerprints: the
    result applies."""
    return {
        "cpu": cpu_name(),
        "cpu_model": cpu_model(),
        "flags": sorted(cpu_flags() & set(TRACKED_FLAGS)),
        "physical_cores": physical_cores(),
        "system": f"{platform.system()} {platform.machine()}",
        "versions": library_versions(),
    }
