"""Training recipes (train/recipes.toml, train/recipes.py): every model has the paper's
entry with a source for every number, explicit flags win over the recipe, and
``python -m train --recipe paper`` trains with the paper's optimiser and settings."""
import json
import sys
from pathlib import Path

import pytest
import torch

from train.__main__ import build_parser, config_from_args, main as train_main
from train.config import TrainConfig
from train.losses import list_objectives
from train.models import list_models
from train.recipes import (SOURCED, RecipeError, apply_recipe, default_path, explicit_flags, get_recipe,
                           load_recipes)
from train.synth import generate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_paper_recipe_covers_every_objective_with_sources():
    paper = load_recipes()["paper"]
    # every paper objective; 'contract' is the generic objective of import-path models (no paper)
    assert set(paper) == set(list_objectives()) - {"contract"} and set(list_models()) <= set(paper)
    for key, entry in paper.items():
        for field in SOURCED:
            assert entry.sources[field], (key, field)
        for field in entry.values:
            assert entry.sources.get(field), (key, field)


def test_paper_numbers_are_the_papers():
    """Spot checks against the papers' text (see each entry's sources)."""
    q = get_recipe("paper", "qmanet").values
    assert (q["optimizer"], q["lr"], q["min_lr"], q["weight_decay"], q["batch_size"], q["epochs"], q["size"]) == (
        "adamw", 1e-4, 5e-7, 0.05, 32, 150, 512)
    g = get_recipe("paper", "mgqformer").values
    assert (g["optimizer"], g["lr"], g["min_lr"], g["batch_size"], g["size"]) == ("adam", 2.5e-7, 1.5e-8, 2, 384)
    assert "epochs" not in g  # not stated in the paper
    assert get_recipe("paper", "diffforensics_stage1").values["batch_size"] == 16
    d = get_recipe("paper", "diffforensics")
    assert (d.values["batch_size"], d.values["epochs"], d.values["objective_options"]) == (
        32, 50, {"clf_weights": "paper"})
    m = get_recipe("paper", "m2sformer").values
    assert (m["optimizer"], m["lr"], m["min_lr"], m["weight_decay"], m["batch_size"], m["epochs"]) == (
        "adamw", 1e-4, 1e-6, 1e-4, 32, 100)
    t = get_recipe("paper", "transforensics").values
    assert (t["optimizer"], t["lr"], t["batch_size"], t["epochs"], t["size"]) == ("adam", 1e-4, 2, 50, 512)


def test_recipe_file_is_package_data():
    assert default_path().is_file() and default_path().parent == ROOT / "train"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "recipes.toml" in pyproject["tool"]["setuptools"]["package-data"]["train"]


def _config(argv):
    return config_from_args(build_parser().parse_args(argv))


def test_explicit_flags_override_the_recipe():
    argv = ["--model", "diffforensics", "--data", "d", "--lr=3e-4", "--batch", "4", "--epochs", "10",
            "--loss-set", "seg_balance=0.2"]
    explicit = explicit_flags(build_parser, argv)
    assert {"lr", "batch_size", "epochs", "loss_set"} <= explicit and "weight_decay" not in explicit
    config, entry, kept = apply_recipe(_config(argv), "paper", explicit)
    assert kept == ["batch_size", "epochs", "lr"]
    assert (config.lr, config.batch_size, config.epochs) == (3e-4, 4, 10)  # given (10 = the default, still given)
    assert config.min_lr == 3e-4  # constant schedule follows the given lr
    assert (config.optimizer, config.weight_decay, config.size, config.recipe) == ("adamw", 0.01, 512, "paper")
    assert config.objective_options == {"clf_weights": "paper", "seg_balance": 0.2}
    stage1, entry, _ = apply_recipe(_config(["--model", "diffforensics", "--data", "d", "--objective",
                                             "diffforensics_stage1"]), "paper")
    assert entry.key == "diffforensics_stage1" and (stage1.batch_size, stage1.epochs) == (16, 100)


def test_bad_recipes_fail_in_one_line(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[fast.m2sformer]\nlr = 1e-3\nmomentum = 0.9\n[fast.m2sformer.sources]\nlr = "x"\n')
    with pytest.raises(RecipeError, match="unknown field"):
        load_recipes(path)
    path.write_text('[fast.m2sformer]\nlr = 1e-3\n[fast.m2sformer.sources]\nlr = "x"\n')
    with pytest.raises(RecipeError, match="no source for optimizer"):
        load_recipes(path)
    with pytest.raises(RecipeError, match="unknown recipe 'fast'"):
        get_recipe("fast", "m2sformer")
    with pytest.raises(RecipeError, match="no entry for 'nomodel'"):
        get_recipe("paper", "nomodel")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe-data")
    generate(root / "synth", 6, size=40, seed=0, progress=False)
    return root / "synth"


def test_train_cli_runs_with_the_paper_recipe(tmp_path, data, capsys):
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        rc = train_main(["--model", "transforensics", "--small", "--data", str(data), "--recipe", "paper",
                         "--size", "64", "--epochs", "1", "--max-steps", "1", "--workers", "0", "--threads", "1",
                         "--out", str(run), "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    # from the recipe: Adam at 1e-4, batch 2 (TransForensics Sec. 4.2); from the flags: size 64, 1 epoch
    assert (config["optimizer"], config["lr"], config["batch_size"], config["recipe"]) == ("adam", 1e-4, 2, "paper")
    assert (config["size"], config["epochs"]) == (64, 1)
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.0


@pytest.mark.parametrize("model, optimizer", [("transforensics", torch.optim.Adam), ("qmanet", torch.optim.AdamW)])
def test_trainer_uses_the_recipes_optimizer(tmp_path, data, model, optimizer):
    from train.recipes import config_with_recipe
    from train.trainer import Trainer

    argv = ["--model", model, "--small", "--data", str(data), "--size", "64", "--batch-size", "2",
            "--workers", "0", "--out", str(tmp_path / "run")]
    config = config_with_recipe(_config(argv), "paper", build_parser, argv, quiet=True)
    trainer = Trainer(config, progress=False)
    try:
        assert type(trainer.optimizer) is optimizer
        group = trainer.optimizer.param_groups[0]
        expected = get_recipe("paper", model).values
        assert group["weight_decay"] == expected["weight_decay"] and group["initial_lr"] == expected["lr"]
    finally:
        trainer.close()


def test_adam_or_adamw_by_config():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(model="m2sformer", data="d", optimizer="sgd").validate()
