"""Export side of the kit: PyTorch models to ONNX (``export.onnx``), the named export-time
rewrites (``export.rewrites``), graph checks and parity (``export.verify``), the TensorRT
op lint (``export.check``), FP16 islands (``export.fp16``) and INT8 Q/DQ
(``export.quantize``), TensorRT engines (``export.tensorrt``, ``export.trtexec``) and Triton
model repositories (``export.triton``).

Imports ``train`` (the models) and ``runtime`` (to check what it will run); never ``bench``.
"""
