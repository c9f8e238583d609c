"""What this machine's processor offers, read without importing torch (seconds on a small CPU).

Prediction with an ONNX Runtime engine needs no torch at all; these checks let
``--engine auto`` take that engine on a CPU that certainly has neither bf16 nor
a GPU, and fall back to torch's own checks wherever that is not certain.
"""

from __future__ import annotations

import functools
import os
import platform

#: CPU features with which torch (oneDNN) may run bf16 kernels: AVX-512 (bf16 emulated or native), AMX, and
#: the AVX-NE-CONVERT of recent AVX2 CPUs. None of them: torch reports no bf16 either.
BF16_FLAGS = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "avx_ne_convert"})

#: Device nodes of GPU drivers (NVIDIA, AMD ROCm): where none exists, torch finds no GPU.
GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The x86-64 CPU's feature flags from ``/proc/cpuinfo``; None where they cannot be read (another OS or
    architecture)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def may_have_bf16() -> bool:
    """False only where the CPU certainly lacks every feature torch runs bf16 with."""
    flags = cpu_flags()
    return flags is None or bool(flags & BF16_FLAGS)


def may_have_gpu() -> bool:
    """False only where no GPU driver's device node exists (Linux); True where that cannot be told."""
    if platform.system() != "Linux":
        return True
    return any(os.path.exists(node) for node in GPU_DEVICES)


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (torch is imported only where a GPU may exist)."""
    if not may_have_gpu():
        return False
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what the platform says), to name it in figures."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def vector_isa() -> str:
    """The widest vector instruction set ONNX Runtime's kernels use here: avx512, avx2 or default (x86-64),
    else the architecture's name."""
    flags = cpu_flags()
    if flags is None:
        return platform.machine().lower() or "unknown"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"
