"""Memory per backend, each in a fresh process: peak resident set after import, set-up and one
inference (CPU), torch's CUDA peak on GPU; plus the model's file sizes (ONNX FP32, state dict,
any precision artifacts)."""
import io

from bench.memory import measure_backend
from bench.subject import Subject

BACKENDS = ("torch", "compile", "ort", "torch-cuda", "ort-cuda", "artifacts")


def test_memory(store, model, backend):
    subject = Subject.paper(model, small=store.small)
    store.close_session()
    rec = measure_backend(subject, backend, store.path_for(subject, backend))
    if backend.startswith("ort"):
        assert not rec["torch_loaded"], "the onnxruntime process imported torch"
    assert rec["peak_rss_mib"] >= rec["rss_import_mib"] > 0
    store.record("memory", **subject.as_dict(), **rec)


def test_file_sizes(store, model):
    import torch

    subject = Subject.paper(model, small=store.small)
    buf = io.BytesIO()
    torch.save(subject.build().state_dict(), buf)
    sizes = {"state_dict": buf.tell() / 2**20, "onnx-fp32": store.export(subject).stat().st_size / 2**20}
    for artifact in store.artifacts:
        if artifact.model == model:
            sizes[artifact.backend.replace("ort-", "onnx-")] = artifact.path.stat().st_size / 2**20
    assert sizes["onnx-fp32"] > 0 and sizes["state_dict"] > 0
    store.record("files", **subject.as_dict(), sizes_mib=sizes)
