"""Models and the engines that run them: the smp factory and checkpoints (a model file is data, checked field
by field in ``fields``), the per-pixel baseline as a model and its blend with a network, the CPU's features,
exported ONNX models and the engines prediction chooses between (torch, ONNX Runtime fp32 and int8, and int8
with an fp32 recompute where it may differ), and which model is the default.
"""

from geoseg.models import adaptive as _adaptive  # noqa: E402,F401  (registers the .adaptive model format)
from geoseg.models import onnx_runtime as _onnx_runtime  # noqa: E402,F401  (registers the .onnx model format)
