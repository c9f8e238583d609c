"""Models and the engines that run them: the smp factory and checkpoints (a model file is data, checked field
by field in ``fields``), the per-pixel baseline as a model, the CPU's features, exported ONNX models and the
engines (torch, ONNX Runtime fp32 and int8) prediction chooses between, and which model is the default.
"""
