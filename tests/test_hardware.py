"""The CPU and GPU checks that let a prediction with ONNX Runtime start without torch: never less cautious
than torch's own."""

from __future__ import annotations

import os

import pytest
import torch

from geoseg.models import hardware


def test_the_cpu_check_is_never_less_cautious_than_torchs(monkeypatch):
    assert not hardware.may_have_bf16() or hardware.cpu_flags() is None or hardware.cpu_flags() & \
        hardware.BF16_FLAGS
    if not hardware.may_have_bf16():  # on this machine: torch agrees that there is no bf16
        assert not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if not hardware.may_have_gpu():
        assert not torch.cuda.is_available()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"sse4_2", "avx2", "fma"}))
    assert not hardware.may_have_bf16() and hardware.vector_isa() == "avx2"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512bw", "avx512vl",
                                                                  "avx512dq"}))
    assert hardware.may_have_bf16() and hardware.vector_isa() == "avx512"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None)  # unknown: ask torch
    assert hardware.may_have_bf16()



def test_the_cpu_is_named_as_lscpu_names_it():
    import shutil
    import subprocess

    if shutil.which("lscpu") is None:
        pytest.skip("no lscpu here")
    listed = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    names = [line.split(":", 1)[1].strip() for line in listed.stdout.splitlines()
             if line.startswith("Model name")]
    if listed.returncode or not names:
        pytest.skip("lscpu does not name this CPU")
    assert hardware.cpu_name() == names[0]
