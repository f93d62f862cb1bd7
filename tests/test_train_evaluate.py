"""``python -m train.evaluate``: metrics of a checkpoint per image and pooled, distortion
conditions, overlays, baselines and error messages."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from train.checkpoint import save_checkpoint
from train.data import read_samples
from train.evaluate import evaluate, main as evaluate_main, overlay_image
from train.data.distortions import Distortion
from train.models import build_model, get_spec
from train.synth import generate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    generate(root / "data", 6, size=40, seed=2, progress=False)
    torch.manual_seed(0)
    model = build_model("m2sformer", small=True)
    config = {"model": "m2sformer", "small": True, "options": {}, "size": 32}
    save_checkpoint(root / "ckpt.pt", {"model": model.state_dict(), "config": config})
    return root, model


def test_evaluate_cli_reports_both_averages_under_distortions(setup, capsys):
    root, _ = setup
    out = root / "out"
    rc = evaluate_main(["--model", "m2sformer", "--checkpoint", str(root / "ckpt.pt"), "--data", str(root / "data"),
                        "--out", str(out), "--jpeg", "60", "--blur", "5", "--noise", "8", "--resize", "0.5",
                        "--overlays", "3", "--workers", "0", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "per-image mean (IMDL-BenCo)" in text and "dataset (pixels pooled)" in text
    report = json.loads((out / "metrics.json").read_text())
    assert [c["condition"] for c in report["conditions"]] == ["clean", "jpeg 60", "blur 5", "noise 8", "resize 0.5"]
    clean = report["conditions"][0]
    assert set(clean["pixel"]["per_image"]) == set(clean["pixel"]["dataset"]) == {"f1", "f1_best", "auc", "iou", "dice"}
    assert set(clean["image"]) >= {"acc", "auc", "eer"}
    assert clean["image"]["images"] == 6
    assert clean["baselines"]["all_zero"]["per_image"]["f1"] == 0.0
    assert 0 < clean["baselines"]["all_one"]["per_image"]["f1"] < 1
    assert {"per_image", "dataset"} <= set(report["conventions"])
    pngs = sorted((out / "overlays").glob("*_overlay.png"))
    assert len(pngs) == 3 and Image.open(pngs[0]).mode == "RGB"


def test_evaluate_scores_at_the_masks_own_resolution(setup):
    root, model = setup
    samples = read_samples(root / "data")
    spec = get_spec("m2sformer")
    clean = evaluate(model, samples, 32, spec.mean, spec.std, progress=False)
    shrunk = evaluate(model, samples, 32, spec.mean, spec.std, Distortion("resize", 0.5), progress=False)
    assert clean["pixel"]["forged_images"] == shrunk["pixel"]["forged_images"] > 0
    assert clean["pixel"]["per_image"]["f1"] != shrunk["pixel"]["per_image"]["f1"]


def test_overlay_marks_prediction_red_and_truth_outline_green():
    image = np.full((12, 12, 3), 100, np.uint8)
    pred = np.zeros((12, 12), bool)
    pred[2:5, 2:5] = True
    truth = np.zeros((12, 12), bool)
    truth[6:10, 6:10] = True
    out = overlay_image(image, pred, truth)
    assert out[3, 3, 0] > 150 and out[3, 3, 1] < 100  # tinted red
    assert tuple(out[6, 6]) == (0, 255, 0) and tuple(out[0, 0]) == (100, 100, 100)


def test_evaluate_errors_are_one_line(setup, tmp_path, capsys):
    root, _ = setup
    rc = evaluate_main(["--model", "transforensics", "--checkpoint", str(root / "ckpt.pt"), "--data",
                        str(root / "data"), "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "trained as m2sformer small=True, not --model transforensics" in err
    (tmp_path / "Tp").mkdir()
    (tmp_path / "Gt").mkdir()
    rc = evaluate_main(["--model", "m2sformer", "--checkpoint", str(root / "ckpt.pt"), "--data", str(tmp_path),
                        "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and f"{tmp_path / 'Tp'}: no images" in err
    (tmp_path / "broken.pt").write_bytes(b"nope")
    rc = evaluate_main(["--model", "m2sformer", "--checkpoint", str(tmp_path / "broken.pt"), "--data",
                        str(root / "data"), "--quiet"])
    assert rc == 1 and "not a readable PyTorch checkpoint" in capsys.readouterr().err
