"""export.onnx parity against the model as built (before the export rewrites) as well as
against the rewritten model it traces: a rewrite that changes the outputs cannot pass."""
import json

import pytest
import torch

from export.onnx import ExportError, export_model
from export.rewrites import REWRITES, Rewrite


def test_sidecar_reports_both_parities(tmp_path):
    res = export_model("m2sformer", tmp_path / "m.onnx", small=True)
    assert res.parity.passed and res.parity_as_built is not None and res.parity_as_built.passed
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    both = side["extra"]["parity"]
    assert set(both) == {"as_built", "rewritten"}
    assert both["as_built"]["max_abs_prob"] == res.parity_as_built.max_abs_prob
    assert side["parity"]["max_abs_diff"] == max(v for p in both.values() for v in p.values())


def _shift_region_bias(model) -> int:
    """A faulty rewrite: changes the outputs (what a wrong rewrite would do)."""
    with torch.no_grad():
        model.region_head.bias.add_(0.5)
    return 1


def test_a_rewrite_that_changes_the_outputs_fails_the_export(tmp_path, monkeypatch):
    monkeypatch.setitem(REWRITES, "faulty", Rewrite("faulty", "shifts the region logits", _shift_region_bias))
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="parity failed against the model as built"):
        export_model("m2sformer", out, small=True)
    assert not out.exists() and not (tmp_path / "bad.onnx.json").exists()
