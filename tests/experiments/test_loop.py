"""Config, data and the training loop at tiny sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.data import image_datasets
from netadv.experiments.loop import TrainingDiverged, train
from netadv.experiments.models import build_model
from netadv.experiments.run_folder import CHECKPOINT

TINY = [
    "dataset=synthetic",
    "model=mlp",
    "model_kwargs={depth: 2, width: 32, activation: tanh}",
    "epochs=2",
    "batch_size=256",
    "limit_train=512",
    "limit_test=256",
]


def tiny(tmp_path, *extra) -> config_mod.RunConfig:
    return config_mod.load(None, [*TINY, f"output_dir={tmp_path}", *extra])


# -- config ---------------------------------------------------------------------------------


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: digits\nlr: 0.01\nrewrite: {period: 2}\n")
    cfg = config_mod.load(path, ["lr=3e-4", "rewrite.start=A", "epochs=4"])
    assert cfg.dataset == "digits" and cfg.lr == 3e-4 and cfg.epochs == 4
    assert cfg.rewrite == {"period": 2, "start": "A"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("lrr=0.1", "did you mean 'lr'"),
        ("dataset=imagenet", "dataset must be one of"),
        ("epochs=0", "epochs must be >= 1"),
        ("lr=fast", "lr must be a number"),
        ("amp=maybe", "amp must be true or false"),
        ("epochs=1.5", "epochs must be an integer"),
        ("target_accuracy=85", "target_accuracy is a fraction"),
        ("noequals", "key=value"),
    ],
)
def test_config_errors_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        config_mod.load(None, [override])
    assert "\n" not in str(e.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config_mod.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_mod.load(bad)


def test_shipped_configs_load():
    configs = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml"))
    assert configs, "configs/ ships experiment configs"
    for path in configs:
        if "experiments" in yaml.safe_load(path.read_text()):  # a study spec (test_study.py)
            continue
        config_mod.load(path)


def test_ga_that_changes_nothing_is_an_error(tmp_path):
    """GA on a GELU model has no adversarial site: the arm would silently be the baseline."""
    cfg = tiny(
        tmp_path, "name=g", "method=ga", "model_kwargs={depth: 2, width: 32, activation: gelu}"
    )
    with pytest.raises(ConfigError, match="changes no activation site"):
        train(cfg, quiet=True)


# -- data -----------------------------------------------------------------------------------


def test_digits_and_padding():
    data = image_datasets("digits", image_size=12)
    assert len(data.train) == 1437 and len(data.test) == 360
    assert data.train[0][0].shape == (1, 12, 12)


@pytest.mark.parametrize("model", ["mlp", "resnet18", "vit", "swin"])
@pytest.mark.parametrize("chans", [1, 3])
def test_models_for_small_inputs(model, chans):
    kwargs = {
        "vit": dict(embed_dim=32, depth=2, num_heads=2),
        "swin": dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2)),
    }.get(model, {})
    size = 16 if model != "mlp" else 8
    m = build_model(model, in_chans=chans, num_classes=7, image_size=size, **kwargs)
    assert m(torch.randn(2, chans, size, size)).shape == (2, 7)


# -- training -------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_run_folder(tmp_path):
    cfg = tiny(
        tmp_path, "name=a", "target_accuracy=0.05", "diagnostics=true", "diagnostics_every=2"
    )
    summary = train(cfg, quiet=True)
    run = tmp_path / "a"
    assert {"config.yaml", "metrics.jsonl", "summary.json", CHECKPOINT, "diagnostics.jsonl"} <= {
        p.name for p in run.iterdir()
    }
    rows = _rows(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "test_top1", "test_top5", "seconds", "elapsed"} <= set(rows[0])
    assert summary["status"] == "ok" and summary["epochs_to_target"] == 1
    assert summary["params"] == sum(
        p.numel()
        for p in build_model(
            "mlp", in_chans=1, num_classes=10, image_size=16, depth=2, width=32, activation="tanh"
        ).parameters()
    )
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 2
    diag = _rows(run / "diagnostics.jsonl")[0]
    assert list(diag["grad_norms"]) == ["1", "3", "5"]
    assert [s["site"] for s in diag["sites"]] == ["2", "4"]
    assert diag["sites"][1]["gain_product"] == pytest.approx(
        diag["sites"][0]["gain"] * diag["sites"][1]["gain"]
    )
    assert diag["sites"][0]["mean_drift"] is not None


def test_same_seed_same_result(tmp_path):
    a = train(tiny(tmp_path, "name=a", "epochs=1"), quiet=True)
    b = train(tiny(tmp_path, "name=b", "epochs=1"), quiet=True)
    assert a["final_top1"] == b["final_top1"]


def test_existing_run_needs_resume(tmp_path):
    train(tiny(tmp_path, "name=a", "epochs=1"), quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny(tmp_path, "name=a", "epochs=1"), quiet=True)


def test_resume_continues_and_matches_uninterrupted(tmp_path, monkeypatch):
    full = train(tiny(tmp_path, "name=full", "epochs=3"), quiet=True)

    # a run killed during epoch 3: the epoch-2 checkpoint is on disk, a metrics line was cut
    from netadv.experiments.classify import CLASSIFY as loop

    evaluate, calls = loop.evaluate, []

    def killed_in_third_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", killed_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, "name=cut", "epochs=3"), quiet=True)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    run = tmp_path / "cut"
    assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 2
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "trai')

    resumed = train(tiny(tmp_path, "name=cut", "epochs=3"), resume=True, quiet=True)
    assert [r["epoch"] for r in _rows(run / "metrics.jsonl")] == [1, 2, 3]
    assert resumed["final_top1"] == pytest.approx(full["final_top1"])
    assert resumed["epochs_completed"] == 3


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    train(tiny(tmp_path, "name=a", "epochs=1"), quiet=True)
    (tmp_path / "a" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load checkpoint"):
        train(tiny(tmp_path, "name=a", "epochs=2"), resume=True, quiet=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny(tmp_path, "name=nan", "lr=1e30", "optimizer=sgd", "epochs=3")
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(cfg, quiet=True)
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_torchrun_two_processes_gloo(tmp_path):
    """DDP on 2 CPU processes: metrics all-reduced over both ranks, only rank 0 writes."""
    import os
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "netadv",
        "train",
        "--quiet",
        *[f"--set={o}" for o in TINY],
        f"--set=output_dir={tmp_path}",
        "--set=name=ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=300)
    finally:  # never leave worker processes behind
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 0, err[-2000:]
    rows = _rows(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]  # written once, by rank 0
    assert rows[0]["train_examples"] == 512  # both ranks' halves summed
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("activation, gain", [("sigmoid", 1.0), ("tanh", 5.0 / 3.0)])
def test_mlp_xavier_init(activation, gain):
    torch.manual_seed(0)
    model = build_model(
        "mlp",
        in_chans=1,
        num_classes=10,
        image_size=16,
        depth=3,
        width=512,
        activation=activation,
        init="xavier",
    )
    hidden = model[3]  # the second Linear: 512 -> 512
    bound = gain * math.sqrt(6.0 / (512 + 512))
    assert hidden.weight.abs().max() <= bound
    assert hidden.weight.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.02)
    assert all(m.bias.abs().max() == 0 for m in model if isinstance(m, torch.nn.Linear))
    default = build_model("mlp", in_chans=1, num_classes=10, image_size=16, depth=3, width=512)
    assert default[3].weight.std() < 0.6 * hidden.weight.std()  # PyTorch's: 1/sqrt(3 fan_in)
    with pytest.raises(ValueError, match="unknown MLP init 'he'"):
        build_model("mlp", in_chans=1, num_classes=10, image_size=16, init="he")
