"""Export side of the kit: PyTorch models to ONNX (``export.onnx``), the named export-time
rewrites (``export.rewrites``), graph checks and parity (``export.verify``).

Imports ``train`` (the models) and ``runtime`` (to check what it will run); never ``bench``.
"""
