"""The numerics profile: the settings that make a compute job's bits independent of the x86-64 CPU it runs on.

    lorarank train ... --kernels portable --threads 2 --deterministic     # the defaults: nothing to type
    lorarank train ... --kernels native                                  # fastest, same-machine bits only

Two runs on one machine agree because they take the same code path; two machines need not. A CPU build
of torch picks its vectorised kernels by the CPU it finds (AVX-512 or AVX2, `ATEN_CPU_CAPABILITY`), MKL
picks its own GEMM code by CPU model and vendor (`MKL_CBWR`), oneDNN by its ISA ceiling
(`ONEDNN_MAX_CPU_ISA`), and a parallel reduction sums in an order set by the thread count. A 1M-parameter
study amplifies a last-bit difference into 10-point accuracy gaps. The `portable` profile pins each:

  ATEN_CPU_CAPABILITY=avx2        torch's kernels at AVX2 (+FMA, x86-64-v3): the floor every x86-64 cluster
                                  node has had since 2013 (Intel Haswell) / 2015 (AMD Excavator, every Zen);
                                  AVX-512 is absent on most AMD generations before Zen 4 and on Intel clients
  MKL_CBWR=COMPATIBLE,STRICT      MKL's one code branch that Intel documents as reproducible on non-Intel CPUs
                                  ("settings other than AUTO or COMPATIBLE are available only for Intel
                                  processors"; an AVX2 branch is silently ignored on AMD, measured here);
                                  STRICT: also for unaligned arrays. Its cost is the GEMMs' (SSE2 kernels):
                                  benchmarks/numerics.py
  ONEDNN_MAX_CPU_ISA=AVX2         oneDNN (bf16 and convolution paths) capped at the same level
  threads                         intra-op threads fixed by the config, never by the machine's core count
                                  (and the tokenizers' pool: a Slurm job uses the cores it was given)
  deterministic                   torch.use_deterministic_algorithms; on a GPU also cuDNN's deterministic
                                  kernels without autotuning and CUBLAS_WORKSPACE_CONFIG (bit-identical
                                  reruns on the same GPU model, driver and software stack; nothing promised
                                  across GPU models)

The variables must be in place before torch runs its first kernel: `apply` sets them and then checks that
torch reports the pinned level (a process that had already run a kernel is refused, loudly). The CLI
applies the profile to every compute command before it imports anything heavy, so `lorarank train` by
hand gets the same bits as the workflow's job; `record()` is what run.json and metrics.json store.
Standard library only at import (the Snakefile imports the settings class).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from dataclasses import dataclass

from lorarank.argtypes import positive_int
from lorarank.errors import UserError
from lorarank.options import identity, opt

PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PORTABLE_LEVEL = "AVX2"  # what torch.backends.cpu.get_cpu_capability() reports under it
PORTABLE_FLAGS = ("avx2", "fma")  # /proc/cpuinfo flags the pinned kernels execute
GPU_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # cuBLAS's deterministic workspace (CUDA >= 10.2)
KERNELS = ("portable", "native")
CPUINFO = "/proc/cpuinfo"
_applied: Numerics | None = None


@dataclass
class Numerics:
    """The flags every compute command takes (config `numerics`): they change the bits, so they rerun jobs."""

    kernels: str = opt("portable", "CPU kernel choice: portable (torch AVX2, MKL COMPATIBLE, oneDNN AVX2: the same "
                                   "bits on any x86-64 CPU with AVX2) or native (whatever this CPU offers: faster, "
                                   "bits match only on the same kind of CPU)", choices=KERNELS)
    threads: int = opt(2, "intra-op CPU threads (the order of parallel sums depends on it)", type=positive_int)
    deterministic: bool = opt(True, "deterministic algorithms (torch; cuDNN and cuBLAS on a GPU)")

    def check(self) -> None:
        """Refuse a profile this machine cannot run: the portable kernels on a CPU without AVX2/FMA."""
        if self.kernels != "portable":
            return
        machine = platform.machine().lower()
        if machine not in ("x86_64", "amd64"):
            raise UserError(f"--kernels portable pins x86-64 kernels (AVX2), but this machine is {machine}: "
                            f"use --kernels native (bits then match only on the same kind of CPU)")
        missing = [f for f in PORTABLE_FLAGS if f not in cpu_flags()]
        if missing:
            raise UserError(f"--kernels portable needs a CPU with {' and '.join(f.upper() for f in PORTABLE_FLAGS)}, "
                            f"and this one lacks {', '.join(f.upper() for f in missing)}: use --kernels native "
                            f"(bits then match only on the same kind of CPU)")


def cpu_flags(path: str | None = None) -> set[str]:
    """The CPU's feature flags as the kernel lists them (empty where there is no /proc/cpuinfo)."""
    try:
        with open(path or CPUINFO) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def env(settings: Numerics) -> dict[str, str]:
    """The environment variables the profile sets (before torch loads, or before its first kernel)."""
    out = dict(PORTABLE_ENV) if settings.kernels == "portable" else {}
    n = str(settings.threads)
    # RAYON: the tokenizers' pool, which would otherwise take every core of the node, not the job's
    out.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, RAYON_NUM_THREADS=n)
    if settings.deterministic:
        out.update(GPU_ENV)
    return out


def apply(settings: Numerics) -> None:
    """Put the profile in force in this process, or refuse in one line. Idempotent."""
    global _applied
    settings.check()
    if "torch" in sys.modules and _applied is not None and _applied != settings:
        raise UserError(f"this process already runs under numerics {identity(_applied)}; it cannot switch to "
                        f"{identity(settings)}")
    os.environ.update(env(settings))
    for var in PORTABLE_ENV:  # native: leave the libraries to their own dispatch
        if settings.kernels == "native" and os.environ.get(var) == PORTABLE_ENV[var]:
            os.environ.pop(var)
    torch = _torch()

    level = torch.backends.cpu.get_cpu_capability()
    if settings.kernels == "portable" and level != PORTABLE_LEVEL:
        raise UserError(f"--kernels portable: torch already runs {level} kernels in this process (a kernel ran "
                        f"before the profile was applied); start it with ATEN_CPU_CAPABILITY=avx2 in the environment")
    torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(settings.deterministic)
    torch.backends.cudnn.deterministic = settings.deterministic
    if settings.deterministic:  # autotuning picks kernels by timing: another pick, other bits
        torch.backends.cudnn.benchmark = False
    _applied = settings


def applied() -> Numerics | None:
    return _applied


def record() -> dict | None:
    """What run.json / metrics.json store: the profile, the variables as this process saw them, and what
    torch reports (kernel level, threads; GPU model, driver, CUDA, cuDNN). None where no profile was applied."""
    if _applied is None:
        return None
    torch = _torch()

    rec = {**identity(_applied), "env": {k: os.environ.get(k) for k in [*PORTABLE_ENV, "OMP_NUM_THREADS",
                                                                         "MKL_NUM_THREADS", *GPU_ENV]},
           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if torch.cuda.is_available():
        rec["gpu"] = {"names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                      "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                      "driver": _gpu_driver(), "cuda": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version(), "cudnn_deterministic": torch.backends.cudnn.deterministic}
    return rec


def _torch():
    """torch, imported by name: every command's CLI imports this module, and the code fingerprint's static
    import closure (lorarank.provenance.fingerprint) must not make torch a dependency of the commands that never apply
    a profile (data, allocation, analysis). The compute commands import torch themselves anyway."""
    return importlib.import_module("torch")


def _gpu_driver() -> str | None:
    """The NVIDIA driver version (nvidia-smi's), or None where it cannot be asked."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.split("\n", 1)[0].strip() or None
