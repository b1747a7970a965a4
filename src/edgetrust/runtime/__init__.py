"""Executors that run ONNX models: onnxruntime (float) and the deterministic fixed-point one."""
