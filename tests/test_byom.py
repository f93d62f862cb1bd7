"""Bring your own model: a model defined in a file outside the project, named by import
path, through the real CLIs — export with parity, the TensorRT op lint, the runtime CLI and
the profile — for each output form the adapter takes; and the one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from export.check import main as check_main
from export.onnx import main as export_main
from runtime.predict import run as predict_main

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64

# Each module is a stand-alone model file: torch only, nothing of the kit.
MODULES = {
    "byom_tensor1": """
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self, width=8):
                super().__init__()
                self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
                self.head = nn.Conv2d(width, 1, 1)

            def forward(self, image):  # logits at half the input size
                return self.head(self.stem(image))

        def build(width=8):
            return Net(width)
    """,
    "byom_tensor2": """
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU())
                self.head = nn.Conv2d(8, 2, 1)

            def forward(self, image):  # two-class logits at the input size
                return self.head(self.stem(image))

        def build():
            return Net()
    """,
    "byom_pair": """
        import torch
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self, raw=False):
                super().__init__()
                self.raw = raw
                self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
                self.head = nn.Conv2d(8, 1, 1)
                self.cls = nn.Linear(8, 1)

            def forward(self, image):  # (prob at a quarter of the size, score (N, 1))
                f = self.stem(image)
                m, s = self.head(f), self.cls(f.mean(dim=(2, 3)))
                return (m, s) if self.raw else (torch.sigmoid(m), torch.sigmoid(s))

        def build(raw=False):
            return Net(raw)
    """,
    "byom_benco": """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        class Base(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
                self.head = nn.Conv2d(8, 1, 1)
                self.cls = nn.Linear(8, 1)

            def run(self, image, mask):
                f = self.stem(image)
                logits = self.head(f)
                loss = F.binary_cross_entropy_with_logits(F.interpolate(logits, size=mask.shape[-2:]), mask)
                return f, logits, loss

        class MVSSLike(Base):  # pred_label None: the score comes from the map
            def forward(self, image, mask, edge_mask, shape=None, *args, **kwargs):
                f, logits, loss = self.run(image, mask)
                return {"backward_loss": loss, "pred_mask": torch.sigmoid(logits), "pred_label": None,
                        "visual_loss": {"predict_loss": loss}}

        class MantraLike(Base):  # training inputs default to None but the loss uses them anyway
            def forward(self, image, mask=None, edge_mask=None, shape=None, *args, **kwargs):
                f, logits, loss = self.run(image, mask)
                return {"backward_loss": loss, "pred_mask": torch.sigmoid(logits), "pred_label": None}

        class PSCCLike(Base):  # a label head, (N,) probabilities
            def forward(self, image, mask, label, *args, **kwargs):
                f, logits, loss = self.run(image, mask)
                pred_label = torch.sigmoid(self.cls(f.mean(dim=(2, 3)))).squeeze(1)
                loss = loss + F.binary_cross_entropy(pred_label, label)
                return {"backward_loss": loss, "pred_mask": torch.sigmoid(logits), "pred_label": pred_label}

        def mvss_like():
            return MVSSLike()

        def pscc_like():
            return PSCCLike()

        def mantra_like():
            return MantraLike()
    """,
    "byom_bad": """
        import torch
        import torch.nn as nn

        class CatNetLike(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 1, 1)

            def forward(self, image, mask, DCT_coef, qtables, edge_mask=None, shape=None, *args, **kwargs):
                return {"pred_mask": torch.sigmoid(self.conv(image)), "pred_label": None}

        class Triple(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 1, 1)

            def forward(self, image):
                x = self.conv(image)
                return [x, x, x]

        class Broken(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 1, 1)

            def forward(self, image):
                raise TypeError("unsupported operand in forward")

        def raises():
            raise RuntimeError("weights file missing")

        def broken():
            return Broken()

        def catnet_like():
            return CatNetLike()

        def triple():
            return Triple()

        def not_a_module():
            return 42
    """,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A folder outside the project holding the model files."""
    folder = tmp_path_factory.mktemp("byom-models")
    assert ROOT not in folder.parents
    for name, source in MODULES.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture()
def on_path(model_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(model_dir))
    return model_dir


def run(module: str, *args, model_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(model_dir), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _import(model_dir: Path, module: str):
    sys.path.insert(0, str(model_dir))
    try:
        return __import__(module)
    finally:
        sys.path.remove(str(model_dir))


def _up(t: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def expected_tensor1(net, x):
    prob = _up(torch.sigmoid(net(x)))
    return prob, prob.amax(dim=(2, 3))


def expected_tensor2(net, x):
    prob = torch.softmax(net(x), dim=1)[:, 1:]
    return prob, prob.amax(dim=(2, 3))


def expected_pair(net, x):
    m, s = net(x)
    return _up(m), s


def expected_mvss(net, x):
    out = net(x, torch.zeros(1, 1, SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE))
    prob = _up(out["pred_mask"])
    return prob, prob.amax(dim=(2, 3))


def expected_pscc(net, x):
    out = net(x, torch.zeros(1, 1, SIZE, SIZE), torch.zeros(1))
    return _up(out["pred_mask"]), out["pred_label"].reshape(1, 1)


FORMS = {  # import path -> (the contract computed by hand from the raw model, what the sidecar says was read)
    "byom_tensor1:build": (expected_tensor1, "tensor (logits), score = max of the map"),
    "byom_tensor2:build": (expected_tensor2, "tensor (logits), score = max of the map"),
    "byom_pair:build": (expected_pair, "pair (probs)"),
    "byom_benco:mvss_like": (expected_mvss, "imdl-benco (probs), score = max of the map"),
    "byom_benco:pscc_like": (expected_pscc, "imdl-benco (probs)"),
}


@pytest.mark.parametrize("path", list(FORMS))
def test_model_by_import_path_exports_lints_predicts_and_profiles(path, model_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    res = run("export.onnx", "--model", path, "--size", SIZE, "--out", out, model_dir=model_dir)
    assert res.returncode == 0, res.stderr
    assert "parity vs torch" in res.stdout
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["model"] == path  # the sidecar names the model by its import path
    assert side["parity"]["passed"] and side["input"]["shape"] == [1, 3, SIZE, SIZE]
    assert side["extra"]["adapter"]["read"] == FORMS[path][1]

    # the graph computes the contract exactly as defined on the raw model (not just self-consistently)
    module, factory = path.split(":")
    torch.manual_seed(0)  # export.onnx builds with seed 0
    net = getattr(_import(model_dir, module), factory)().eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        prob, score = FORMS[path][0](net, x)
    got_prob, got_score = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["prob", "score"], {"image": x.numpy()})
    np.testing.assert_allclose(got_prob, prob.numpy(), atol=1e-5)
    np.testing.assert_allclose(got_score, score.numpy(), atol=1e-5)
    assert got_prob.min() >= 0 and got_prob.max() <= 1

    assert check_main([str(out), "--target", "trt10.3", "--target", "trt10.16", "--target", "trt11"]) == 0
    assert capsys.readouterr().out.count(": OK") == 3

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(photo)
    assert predict_main([str(out), str(photo), "--out", str(tmp_path / "masks"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert 0.0 <= row["score"] <= 1.0 and (row["height"], row["width"]) == (45, 70)
    with Image.open(tmp_path / "masks" / "photo_mask.png") as mask:
        assert mask.size == (70, 45)

    res = run("bench.profile", "--model", path, "--size", SIZE, "--json", model_dir=model_dir)
    assert res.returncode == 0, res.stderr
    prof = json.loads(res.stdout)
    assert prof["model"] == path and prof["input_size"] == SIZE
    assert prof["params_m"] == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)
    assert set(prof["components"]) == {name for name, _ in net.named_children()}
    # every conv runs at a quarter of the input size or more: its weights x output pixels MACs at least
    conv_macs = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert prof["gmacs_fvcore"] > conv_macs * (SIZE // 4) ** 2 / 1e9


def test_default_spec_mean_std_and_options_reach_the_sidecar_and_factory(on_path, tmp_path):
    out = tmp_path / "m.onnx"
    rc = export_main(["--model", "byom_tensor1:build", "--size", "32", "--set", "width=4", "--mean", "0.5,0.5,0.5",
                      "--std", "0.25,0.25,0.25", "--out", str(out)])
    assert rc == 0
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["preprocess"]["mean"] == [0.5] * 3 and side["preprocess"]["std"] == [0.25] * 3
    assert side["preprocess"]["size"] == [32, 32] and side["variant"] == {"width": 4}
    from train.models import build_model, get_spec

    assert sum(p.numel() for p in build_model("byom_tensor1:build", width=4).parameters()) == \
        3 * 4 * 9 + 4 + 2 * 4 + 4 + 1
    assert get_spec("byom_tensor1:build").input_size == 512  # the documented default


def test_outputs_option_reads_logits_and_range_check_names_it(on_path, tmp_path, capsys):
    out = tmp_path / "raw.onnx"
    assert export_main(["--model", "byom_pair:build", "--size", "32", "--set", "raw=True", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "leaves [0, 1]" in err and "--set outputs=logits" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert export_main(["--model", "byom_pair:build", "--size", "32", "--set", "raw=True",
                        "--set", "outputs=logits", "--out", str(out)]) == 0
    side = json.loads((tmp_path / "raw.onnx.json").read_text())
    assert side["extra"]["adapter"]["read"] == "pair (logits)"
    pair = _import(on_path, "byom_pair")
    torch.manual_seed(0)
    net = pair.build(raw=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        m, s = net(x)
    prob, score = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    np.testing.assert_allclose(score, torch.sigmoid(s).numpy(), atol=1e-6)
    np.testing.assert_allclose(prob, F.interpolate(torch.sigmoid(m), size=(32, 32), mode="bilinear").numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("model, message", [
    ("no_such_pkg.models:build", "no module named 'no_such_pkg'"),
    ("byom_tensor1:nope", "has no attribute 'nope'"),
    ("byom_tensor1", "unknown model 'byom_tensor1'; registered: diffforensics, m2sformer"),
    ("nosuchmodel", "or name one by import path, package.module:factory"),
])
def test_unresolvable_model_is_one_argument_error(model, message, on_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        export_main(["--model", model])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].count("error:") == 1 and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("model, message", [
    ("byom_bad:raises", "model 'byom_bad:raises': the factory raised RuntimeError: weights file missing"),
    ("byom_bad:not_a_module", "the factory returned int, not a torch.nn.Module"),
    ("byom_bad:catnet_like", "forward needs DCT_coef, qtables besides the image"),
    ("byom_bad:triple", "unsupported output (list); taken: a tensor (N,1,H,W)"),
])
def test_unusable_model_is_one_line_and_writes_nothing(model, message, on_path, tmp_path, capsys):
    assert export_main(["--model", model, "--size", "32", "--out", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not list(tmp_path.iterdir())


def test_factory_error_through_the_real_process_has_no_traceback(model_dir, tmp_path):
    for module, extra in (("export.onnx", ["--out", tmp_path / "x.onnx"]), ("bench.profile", [])):
        res = run(module, "--model", "byom_bad:raises", "--size", "32", *extra, model_dir=model_dir)
        assert res.returncode == 1
        assert res.stderr.strip().splitlines() == [
            "error: model 'byom_bad:raises': the factory raised RuntimeError: weights file missing"]


def test_adapted_state_dict_is_the_models_own(on_path, tmp_path):
    from train.models import build_model

    benco = _import(on_path, "byom_benco")
    torch.manual_seed(1)
    original = benco.mvss_like()
    adapted = build_model("byom_benco:mvss_like")
    assert list(adapted.state_dict()) == list(original.state_dict())
    adapted.load_state_dict(original.state_dict())  # the original project's checkpoint loads
    torch.save(original.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "w.onnx"
    assert export_main(["--model", "byom_benco:mvss_like", "--size", "32", "--checkpoint",
                        str(tmp_path / "weights.pt"), "--out", str(out)]) == 0
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = F.interpolate(original.eval()(x, torch.zeros(1, 1, 32, 32), None)["pred_mask"], size=(32, 32),
                             mode="bilinear")
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["prob"], {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_entry_point_models(on_path, tmp_path, monkeypatch):
    """A distribution registering a factory and a ModelSpec in the imlkit.models group."""
    dist = tmp_path / "site"
    info = dist / "byom_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byom-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[imlkit.models]\nbyom-tiny = byom_tensor1:build\nbyom-spec = byom_plugin_spec:SPEC\n")
    (dist / "byom_plugin_spec.py").write_text(textwrap.dedent("""
        from byom_pair import build
        from train.models import ModelSpec

        SPEC = ModelSpec(name="ignored", title="pair model", paper="", builder=build, input_size=48,
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    """))
    monkeypatch.syspath_prepend(str(dist))
    from train.models import build_model, get_spec
    from train.models.external import known_names

    assert {"byom-tiny", "byom-spec"} <= set(known_names())
    assert get_spec("byom-tiny").input_size == 512
    spec = get_spec("byom-spec")
    assert (spec.name, spec.input_size, spec.mean) == ("byom-spec", 48, (0.5, 0.5, 0.5))
    prob, score = build_model("byom-spec").eval().predict(torch.rand(2, 3, 48, 48))
    assert prob.shape == (2, 1, 48, 48) and score.shape == (2, 1)
    out = tmp_path / "spec.onnx"
    assert export_main(["--model", "byom-spec", "--out", str(out)]) == 0
    side = json.loads((tmp_path / "spec.onnx.json").read_text())
    assert side["model"] == "byom-spec" and side["preprocess"]["mean"] == [0.5] * 3
    assert side["input"]["shape"] == [1, 3, 48, 48]


def test_bench_models_option_takes_import_paths(on_path):
    from bench.conftest import parse_models

    assert parse_models("M2SFormer, byom_tensor1:build") == ["m2sformer", "byom_tensor1:build"]
    with pytest.raises(pytest.UsageError, match="--models: model 'byom_tensor1:nope': .* no attribute"):
        parse_models("byom_tensor1:nope")


@pytest.mark.parametrize("path, parts", [("byom_benco:pscc_like", {"model_loss"}),
                                         ("byom_tensor1:build", {"pixel", "image"})])
def test_train_and_evaluate_an_import_path_model(path, parts, on_path, tmp_path, capsys):
    from train.__main__ import main as train_main
    from train.evaluate import main as evaluate_main
    from train.synth import generate

    generate(tmp_path / "data", 6, size=40, seed=0, progress=False)
    threads = torch.get_num_threads()
    try:
        rc = train_main(["--model", path, "--data", str(tmp_path / "data"), "--size", "32", "--batch-size", "2",
                         "--epochs", "1", "--max-steps", "2", "--workers", "0", "--threads", "1", "--log-every", "1",
                         "--quiet", "--out", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, capsys.readouterr().err
    header = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert parts <= set(header)
    rc = evaluate_main(["--model", path, "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data",
                        str(tmp_path / "data"), "--workers", "0", "--overlays", "0", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "eval-data" / "metrics.json").read_text())
    assert metrics["model"] == path and metrics["size"] == 32


def test_fp16_islands_and_int8_qdq_of_an_import_path_model(on_path, tmp_path, capsys):
    """The precision tools take the user model's export like ours: FP16 with FP32 islands and
    Q/DQ INT8 within their default tolerances, both passing the TensorRT 11 lint."""
    from export.fp16 import main as fp16_main
    from export.quantize import main as quantize_main

    out = tmp_path / "benco.onnx"
    assert export_main(["--model", "byom_benco:mvss_like", "--size", "32", "--out", str(out)]) == 0
    assert fp16_main([str(out), "--calib", "4"]) == 0
    assert quantize_main([str(out), "--calib", "8", "--eval", "4"]) == 0
    capsys.readouterr()
    for variant, precision in (("benco.fp16.onnx", "fp16-mixed"), ("benco.int8.onnx", "int8-qdq")):
        side = json.loads((tmp_path / f"{variant}.json").read_text())
        assert side["model"] == "byom_benco:mvss_like" and side["variant"]["precision"] == precision
        assert check_main([str(tmp_path / variant), "--target", "trt11"]) == 0
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(tmp_path / "benco.int8.onnx")).graph.node}


def test_training_inputs_with_none_defaults_get_zeros(on_path):
    from train.models import build_model

    model = build_model("byom_benco:mantra_like").eval()
    assert model.extra_inputs == ["mask", "edge_mask"]  # shape=None is left to its default
    with torch.no_grad():
        prob, score = model.predict(torch.rand(2, 3, 32, 32))
    assert prob.shape == (2, 1, 32, 32) and score.shape == (2, 1)


def test_imdlbenco_names_without_the_package_are_one_line(capsys):
    try:
        import IMDLBenCo  # noqa: F401
        pytest.skip("imdlbenco is installed here; this checks the message without it")
    except ImportError:
        pass
    with pytest.raises(SystemExit):
        export_main(["--model", "imdlbenco:MVSSNet"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model 'imdlbenco:MVSSNet': needs the optional package imdlbenco" in err


@pytest.mark.parametrize("model, export_message, profile_message", [
    ("byom_bad:broken", "byom_bad:broken: forward failed on a (1, 3, 32, 32) image: TypeError: unsupported operand",
     "byom_bad:broken: counting failed: TypeError: unsupported operand in forward"),
    ("byom_bad:triple", "unsupported output (list)", "unsupported output (list)"),
])
def test_forward_errors_are_one_line_in_export_and_profile(model, export_message, profile_message, on_path,
                                                           tmp_path, capsys):
    from bench.profile import main as profile_main

    assert export_main(["--model", model, "--size", "32", "--out", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and export_message in err[0], err
    assert profile_main(["--model", model, "--size", "32"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and profile_message in err[0], err
