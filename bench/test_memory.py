"""Memory per backend, each in a fresh process: peak resident set after import, set-up and one
inference (CPU), torch's CUDA peak on GPU; plus the model's file sizes (ONNX FP32, state dict,
any precision artifacts)."""
import io

from bench.memory import measure_backend

BACKENDS = ("torch", "compile", "ort", "ov", "ov-bf16", "torch-cuda", "ort-cuda", "artifacts")


def test_memory(store, subject, backend):
    store.close_session()
    rec = measure_backend(subject, backend, store.path_for(subject, backend))
    if backend.startswith(("ort", "ov")):
        assert not rec["torch_loaded"], f"the {backend} process imported torch"
    assert rec["peak_rss_mib"] >= rec["rss_import_mib"] > 0
    store.record("memory", suite="core", **subject.as_dict(), **rec)


def test_file_sizes(store, subject):
    import torch

    buf = io.BytesIO()
    torch.save(subject.build().state_dict(), buf)
    sizes = {"state_dict": buf.tell() / 2**20, "onnx-fp32": store.export(subject).stat().st_size / 2**20}
    for artifact in store.artifacts:
        if artifact.model == subject.model and artifact.size == subject.size:
            sizes[artifact.backend.replace("ort-", "onnx-")] = artifact.path.stat().st_size / 2**20
    assert sizes["onnx-fp32"] > 0 and sizes["state_dict"] > 0
    store.record("files", **subject.as_dict(), sizes_mib=sizes)
