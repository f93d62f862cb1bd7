"""train.convert --format m2sformer-authors: a checkpoint in the layout of the M2SFormer
authors' code (names and shapes from tests/data/m2sformer_authors_state_dict.json, a copy
of shared/papers/, random values), saved in their format, converted, loaded and exported.

The DCT filters of their checkpoints are not learned (their code computes them at
construction), so the fixture writes the filters of their frequency rule there; a
checkpoint with other filters is refused (tested)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.convert import FORMATS, convert_file, m2sformer_authors_key, main
from train.models import build_model, get_spec
from train.models.blocks.dct import dct_basis, top_frequencies

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = json.loads((ROOT / "tests" / "data" / "m2sformer_authors_state_dict.json").read_text())


def authors_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the authors' names and shapes; BatchNorm statistics plausible."""
    gen = torch.Generator().manual_seed(seed)
    basis = dct_basis(32, 32, top_frequencies(16, 32, 32, "authors"))
    state = {}
    for key, shape in LAYOUT.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif "dct_weight_" in key:
            state[key] = basis[int(key.rsplit("_", 1)[1])].expand(*shape).clone()
        elif key.endswith("running_var"):
            state[key] = torch.rand(*shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(*shape, generator=gen) * 0.05
    return state


def save_theirs(path: Path, state: dict) -> Path:
    torch.save({"model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "current_epoch": 7}, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    theirs = authors_state()
    src = save_theirs(root / "model_weight_EPOCH7_fold1.pth.tar", theirs)
    vectors = np.random.default_rng(0).standard_normal((2, 300)).astype(np.float32)
    np.save(root / "wv.npy", vectors)
    out = root / "ours.pt"
    assert main(["--format", "m2sformer-authors", str(src), "--word-vectors", str(root / "wv.npy"),
                 "--out", str(out)]) == 0
    return {"root": root, "src": src, "theirs": theirs, "vectors": vectors, "out": out}


def test_layout_has_513_tensors_and_every_name_maps():
    assert len(LAYOUT) == 513
    unmapped = [k for k in LAYOUT if m2sformer_authors_key(k) is None]
    assert unmapped == []
    assert "m2sformer-authors" in FORMATS


def test_checkpoint_records_the_variant_and_loads_without_flags(converted):
    data = load_checkpoint(converted["out"])
    assert data["config"] == {"model": "m2sformer", "small": False, "variant": "authors", "options": {}}
    assert data["imported"]["format"] == "m2sformer-authors"
    model, config = model_from_checkpoint(converted["out"])  # the variant resolved from the config
    assert config["variant"] == "authors"
    assert model.m2s.spectral.basis.shape == (16, 32, 32)
    torch.testing.assert_close(model.text.table, torch.from_numpy(converted["vectors"]))


def test_tensors_land_where_they_belong(converted):
    theirs = converted["theirs"]
    model, _ = model_from_checkpoint(converted["out"])
    pairs = [
        ("feature_encoding.patch_embed1.proj.weight", model.encoder.patch_embed.proj.weight),
        ("feature_encoding.patch_embed3.norm.bias", model.encoder.stages_2.downsample.norm.bias),
        ("feature_encoding.block3.5.mlp.dwconv.dwconv.weight", model.encoder.stages_2.blocks[5].mlp.dwconv.weight),
        ("feature_encoding.block4.2.attn.kv.weight", model.encoder.stages_3.blocks[2].attn.kv.weight),
        ("feature_encoding.norm2.weight", model.encoder.stages_1.norm.weight),
        ("skip_connection_module.msms_block.fc.2.weight", model.m2s.spectral.mlp[2].weight),
        ("skip_connection_module.msms_block.init_conv_scale_1.3.weight", model.m2s.scales[1].body[1][0].weight),
        ("skip_connection_module.msms_block.init_conv_scale_1.4.running_var", model.m2s.scales[1].body[1][1].running_var),
        ("skip_connection_module.msms_block.spatial_attention_map_scale_0.0.weight", model.m2s.scales[0].gate.weight),
        ("skip_connection_module.msms_block.final_conv_scale_1.1.bias", model.m2s.scales[1].out[1].bias),
        ("skip_connection_module.msms_block.alpha_list.1", model.m2s.scales[1].alpha),
        ("skip_connection_module.msms_block.beta_list.0", model.m2s.scales[0].beta),
        ("decoder_stage3.block.attn.kv.weight", model.decoder[2].block.attn.kv.weight),
        ("decoder_stage1.block.mlp.dwconv.dwconv.bias", model.decoder[0].block.mlp.dwconv.bias),
        ("decoder_stage2.patch_embedding.proj.weight", model.decoder[1].embed.proj.weight),
        ("decoder_stage2.text_guided_attention.attention_map.3.weight", model.decoder[1].dga.embed[3].weight),
        ("global_prior.0.weight", model.prior_head.weight),
        ("seg_head.edge_conv.0.bias", model.edge_head.bias),
    ]
    for key, ours in pairs:
        assert torch.equal(theirs[key], ours.detach()), key


def test_conv_bias_before_batchnorm_folds_exactly(converted):
    """Their conv(x) + b -> BatchNorm (eval) against our bias-free conv -> BatchNorm with
    the folded running mean, for a skip reduction and a DGA embedding."""
    theirs = converted["theirs"]
    model, _ = model_from_checkpoint(converted["out"])
    torch.manual_seed(0)
    x = torch.randn(2, 128, 5, 7)
    p = "skip_connection_module.skip_connection_reduction2."
    y = F.conv2d(x, theirs[p + "0.weight"], theirs[p + "0.bias"])
    ref = F.batch_norm(y, theirs[p + "1.running_mean"], theirs[p + "1.running_var"], theirs[p + "1.weight"],
                       theirs[p + "1.bias"], training=False, eps=1e-5)
    with torch.no_grad():
        ours = model.m2s.reduce[1][1](model.m2s.reduce[1][0](x))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    text = torch.randn(3, 300, 1, 1)
    p = "decoder_stage1.text_guided_attention.attention_map."
    y = F.conv2d(text, theirs[p + "0.weight"], theirs[p + "0.bias"])
    ref = F.batch_norm(y, theirs[p + "1.running_mean"], theirs[p + "1.running_var"], theirs[p + "1.weight"],
                       theirs[p + "1.bias"], training=False, eps=1e-5)
    with torch.no_grad():
        ours = model.decoder[0].dga.embed[1](model.decoder[0].dga.embed[0](text))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("damage, expected", [
    ("unknown", "unknown key(s) for the M2SFormer authors' layout: decoder_stage4.norm.weight"),
    ("missing", "1 tensor(s) missing (nothing maps to m2s.scales.1.alpha)"),
    ("shape", "wrong shape(s): seg_head.region_conv.0.weight (1, 32, 1, 1), expected (1, 64, 1, 1)"),
    ("dct", "DCT filter(s) that are not those of the authors' frequency rule: "
            "skip_connection_module.msms_block.dct_weight_2"),
])
def test_bad_checkpoints_fail_in_one_line(tmp_path, converted, damage, expected, capsys):
    state = dict(converted["theirs"])
    if damage == "unknown":
        state["decoder_stage4.norm.weight"] = torch.ones(64)
    elif damage == "missing":
        del state["skip_connection_module.msms_block.alpha_list.1"]
    elif damage == "shape":
        state["seg_head.region_conv.0.weight"] = torch.zeros(1, 32, 1, 1)
    else:  # FcaNet's 4u filters instead of the authors' (32 u) // 7
        basis = dct_basis(32, 32, top_frequencies(16, 32, 32, "fcanet"))
        state["skip_connection_module.msms_block.dct_weight_2"] = basis[2].expand(256, 32, 32).clone()
    src = save_theirs(tmp_path / "bad.pth.tar", state)
    out = tmp_path / "out.pt"
    rc = main(["--format", "m2sformer-authors", str(src), "--word-vectors", str(converted["root"] / "wv.npy"),
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not out.exists() and list(tmp_path.glob(".out.pt*")) == []


def test_bad_word_vectors_and_inputs_fail_in_one_line(tmp_path, converted, capsys):
    np.save(tmp_path / "wv3.npy", np.zeros((3, 300), np.float32))
    np.save(tmp_path / "wv.npy", np.zeros((2, 300), np.float32))
    torch.save({"state": {}}, tmp_path / "foreign.pth.tar")
    cases = [
        ([str(converted["src"]), "--word-vectors", str(tmp_path / "wv3.npy")], "expected a float array of shape (2, 300)"),
        ([str(converted["src"]), "--word-vectors", str(tmp_path / "none.npy")], "word-vector file not found"),
        ([str(tmp_path / "absent.pth.tar"), "--word-vectors", str(tmp_path / "wv.npy")], "file not found"),
        ([str(tmp_path / "foreign.pth.tar"), "--word-vectors", str(tmp_path / "wv.npy")],
         "no 'model_state_dict' in the checkpoint"),
    ]
    for args, expected in cases:
        rc = main(["--format", "m2sformer-authors", *args, "--out", str(tmp_path / "o.pt")])
        err = capsys.readouterr().err
        assert rc == 1 and err.startswith("error: "), err
        assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "o.pt").exists()


def test_without_word_vectors_needs_bpemb(tmp_path, converted, monkeypatch, capsys):
    """Where bpemb is not installed (simulated by blocking its import) the conversion
    stops in one line before reading anything else."""
    monkeypatch.setitem(sys.modules, "bpemb", None)  # import bpemb -> ImportError
    rc = main(["--format", "m2sformer-authors", str(converted["src"]), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "bpemb package is not installed" in err
    assert not (tmp_path / "o.pt").exists()


def test_cli_exit_status_and_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "train.convert", "--format", "m2sformer-authors",
                          str(tmp_path / "absent.pth.tar"), "--word-vectors", str(tmp_path / "absent.npy"),
                          "--out", str(tmp_path / "o.pt")], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'absent.npy'}: word-vector file not found"]


def _onnx_vs_model(onnx_path, model, seed=1, n=3, size=256):
    from runtime.backends.ort_backend import OrtBackend

    spec = get_spec("m2sformer")
    mean = torch.tensor(spec.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(spec.std).reshape(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    backend = OrtBackend(onnx_path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for _ in range(n):
        x = (torch.rand(1, 3, size, size, generator=gen) - mean) / std
        with torch.no_grad():
            prob, score = model.predict(x)
        out = backend.run(x.numpy())
        worst = max(worst, float(np.abs(out["prob"] - prob.numpy()).max()),
                    float(np.abs(out["score"] - score.numpy()).max()))
    return worst


@pytest.mark.slow
def test_converted_export_matches_the_authors_variant(converted):
    """Convert -> export (the full-size model at 256) -> the ONNX outputs equal our
    ``authors`` variant with the converted weights loaded directly (<= 1e-5)."""
    from export.onnx import export_model

    onnx_path = converted["root"] / "m2s_authors.onnx"
    res = export_model("m2sformer", onnx_path, checkpoint=converted["out"], variant="authors")
    assert res.parity.passed and res.parity_as_built.passed
    model = build_model("m2sformer", **get_spec("m2sformer").variants["authors"]).eval()
    model.load_state_dict(load_checkpoint(converted["out"])["model"])
    assert _onnx_vs_model(onnx_path, model) <= 1e-5
    side = json.loads(Path(f"{onnx_path}.json").read_text())
    assert set(side["extra"]["parity"]) == {"as_built", "rewritten"}


@pytest.mark.slow
def test_export_cli_builds_the_variant_from_the_checkpoint(converted):
    """``python -m export.onnx --model m2sformer --checkpoint OUT.pt``, no further flags:
    the export equals the converted model and its sidecar records the checkpoint's variant."""
    onnx_path = converted["root"] / "m2s_noflags.onnx"
    res = subprocess.run([sys.executable, "-m", "export.onnx", "--model", "m2sformer", "--checkpoint",
                          str(converted["out"]), "--out", str(onnx_path)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    model, _ = model_from_checkpoint(converted["out"])
    assert _onnx_vs_model(onnx_path, model) <= 1e-5
    side = json.loads(Path(f"{onnx_path}.json").read_text())
    assert side["variant"].get("variant") == "authors"


def test_convert_file_rejects_an_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        convert_file("nope", tmp_path / "x", tmp_path / "y.pt")
