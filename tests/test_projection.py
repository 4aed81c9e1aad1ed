"""``--projection-layer``: the layer between a student's features and its embedding (linear, none or auto)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lscdistill.cli import app
from lscdistill.models import Student, build_student, load_run_model, signed_features

runner = CliRunner()


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("project", "dim", "linear"),
    [
        (True, None, True),
        ("linear", None, True),
        (False, None, False),
        ("auto", None, False),
        ("none", None, False),
        ("auto", 9, True),
        (False, 9, True),
    ],
)
def test_student_projection_modes(project, dim, linear):
    student = build_student({"architecture": "test_vit", "project": project, "n_dim": dim})
    width = student.backbone.num_features
    assert isinstance(student.proj, torch.nn.Linear) == linear
    assert _params(student) == _params(student.backbone) + (width * student.n_dim + student.n_dim if linear else 0)
    z = student.eval()(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, dim or width)


def test_no_projection_needs_the_backbone_width():
    with pytest.raises(ValueError, match=r"no projection layer: .* 64 wide, but n_dim is 9 \(use --n-dim 64"):
        build_student({"architecture": "test_vit", "project": "none", "n_dim": 9})
    with pytest.raises(ValueError, match="projection layer must be one of auto, linear, none"):
        Student(torch.nn.Identity(), project="conv")


def test_vit_s_projection_is_the_147840_parameters_table_9_does_not_have():
    with torch.device("meta"):
        linear = build_student({"architecture": "vit_small_patch16_224", "project": True})
        none = build_student({"architecture": "vit_small_patch16_224", "project": "none"})
    assert _params(linear) - _params(none) == 384 * 384 + 384 == 147_840


def test_train_without_projection_layer_and_its_errors(tmp_path):
    common = ["train", "--model", "test_vit", "--data", "digits:val", "--epochs", "1", "-b", "64", "-q"]
    run = tmp_path / "none"
    result = runner.invoke(app, [*common, "--projection-layer", "none", "--out", str(run)])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"]["project"] == "none"
    model, _ = load_run_model(run)
    assert isinstance(model.proj, torch.nn.Identity) and not any(k.startswith("proj.") for k in model.state_dict())
    for extra, message in (
        (["--projection-layer", "none", "--n-dim", "9"], "no projection layer"),
        (["--projection-layer", "conv"], "--projection-layer must be one of auto, linear, none"),
    ):
        bad = tmp_path / "bad"
        result = runner.invoke(app, [*common, *extra, "--out", str(bad)])
        assert result.exit_code != 0 and message in result.output, result.output
        assert not bad.exists()


@pytest.mark.parametrize(
    ("architecture", "signed"),
    [("test_vit", True), ("test_convnext", True), ("test_resnet", False), ("test_efficientnet", False)],
)
def test_signed_features_follow_the_last_layer(architecture, signed):
    backbone = build_student({"architecture": architecture}).backbone
    assert signed_features(backbone) == signed
    if not signed and architecture == "test_resnet":  # ReLU then pooling: nothing below zero
        with torch.no_grad():
            z = backbone.eval().forward_head(backbone.forward_features(torch.randn(8, 3, 32, 32)), pre_logits=True)
        assert bool((z >= 0).all())


@pytest.mark.parametrize(("dim", "project"), [(None, "none"), (9, True)])
def test_auto_drops_the_layer_for_a_vit_at_its_width(tmp_path, dim, project):
    args = ["train", "--model", "test_vit", "--data", "digits:val", "--epochs", "1", "-b", "64", "-q"]
    args += ["--n-dim", str(dim)] if dim else []
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "model.json").read_text())["model"]["project"] == project
