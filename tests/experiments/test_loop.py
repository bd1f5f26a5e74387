"""Config, data and the training loop at tiny sizes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.data import image_datasets
from netadv.experiments.loop import TrainingDiverged, advice, train
from netadv.experiments.models import build_model
from netadv.experiments.run_folder import CHECKPOINT

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
        ("device=tpu", "device must be auto, cpu, cuda, cuda:N or mps"),
        ("device=cuda:x", "device must be auto, cpu, cuda, cuda:N or mps"),
        ("label_smoothing=1.0", r"label_smoothing must be in \[0, 1\)"),
        ("label_smoothing=-0.1", r"label_smoothing must be in \[0, 1\)"),
        ("weight_decay=-1e-4", "weight_decay must be >= 0"),
        ("threads=0", "threads must be >= 1"),
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


def test_ga_that_changes_nothing_is_an_error(tmp_path, tiny):
    """GA on a GELU model has no adversarial site: the arm would silently be the baseline."""
    cfg = tiny("name=g", "method=ga", "model_kwargs={depth: 2, width: 32, activation: gelu}")
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


def test_train_writes_run_folder(tmp_path, tiny):
    cfg = tiny("name=a", "target_accuracy=0.05", "diagnostics=true", "diagnostics_every=2")
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


def test_same_seed_same_result(tmp_path, tiny):
    a = train(tiny("name=a", "epochs=1"), quiet=True)
    b = train(tiny("name=b", "epochs=1"), quiet=True)
    assert a["final_top1"] == b["final_top1"]


def test_existing_run_needs_resume(tmp_path, tiny):
    train(tiny("name=a", "epochs=1"), quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny("name=a", "epochs=1"), quiet=True)


def _same_weights(a: Path, b: Path) -> bool:
    """Whether two run folders' checkpoints hold the same weights and optimizer state."""
    sa, sb = (torch.load(p / CHECKPOINT, weights_only=True) for p in (a, b))
    same = sa["model"].keys() == sb["model"].keys()
    same &= all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    moments = [
        (x, y)
        for i in sa["optimizer"]["state"]
        for x, y in zip(sa["optimizer"]["state"][i].values(), sb["optimizer"]["state"][i].values())
    ]
    return same and all(torch.equal(x, y) for x, y in moments)


@pytest.mark.parametrize("workers", [0, 2])
def test_augmented_resume_equals_uninterrupted_bit_for_bit(
    tmp_path, kill_in_evaluation, tiny, workers, reproducible_rows
):
    """Augmentation draws from torch's global generator (or, with workers, from seeds the
    loader draws): a killed and resumed run must draw what the uninterrupted one drew."""
    extra = ["augment=true", "epochs=3", f"num_workers={workers}", "diagnostics=true"]
    extra.append("diagnostics_every=2")
    train(tiny("name=full", *extra), quiet=True)

    kill_in_evaluation(3)  # in epoch 3: the epoch-2 checkpoint is on disk
    with pytest.raises(KeyboardInterrupt):
        train(tiny("name=cut", *extra), quiet=True)
    run = tmp_path / "cut"
    assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 2
    assert max(r["epoch"] for r in _rows(run / "diagnostics.jsonl")) == 3  # epoch 3's rows
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "trai')  # a line cut by the kill

    resumed = train(tiny("name=cut", *extra), resume=True, quiet=True)
    assert resumed["epochs_completed"] == 3
    assert reproducible_rows(run / "metrics.jsonl") == reproducible_rows(
        tmp_path / "full" / "metrics.jsonl"
    )
    assert _same_weights(run, tmp_path / "full")
    # the diagnostics and per-step rows of the killed epoch were dropped, not repeated
    assert _rows(run / "diagnostics.jsonl") == _rows(tmp_path / "full" / "diagnostics.jsonl")
    steps = _rows(run / "steps.jsonl")
    assert steps == _rows(tmp_path / "full" / "steps.jsonl")
    assert [r["epoch"] for r in steps] == [1, 2, 3] and [r["first_step"] for r in steps] == [
        0,
        2,
        4,
    ]


def test_checkpoint_holds_every_random_state_and_the_scaler(tmp_path, tiny):
    train(tiny("name=a", "epochs=1"), quiet=True)
    state = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)
    assert state["world"] == 1 and len(state["rng"]) == 1
    assert {"torch", "cuda", "numpy", "python"} <= state["rng"][0].keys()
    assert "scaler" in state


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_amp_resume_equals_uninterrupted_bit_for_bit(
    tmp_path, kill_in_evaluation, tiny, reproducible_rows
):
    """On a GPU: float16 with the loss scaler, dropout-free model, augmentation on the CPU;
    the scaler's state and the CUDA generator travel in the checkpoint."""
    extra = ["augment=true", "epochs=3", "device=cuda", "amp=true"]
    train(tiny("name=full", *extra), quiet=True)
    kill_in_evaluation(3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny("name=cut", *extra), quiet=True)
    state = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    assert state["scaler"]["scale"] > 0 and state["rng"][0]["cuda"] is not None
    train(tiny("name=cut", *extra), resume=True, quiet=True)
    assert reproducible_rows(tmp_path / "cut" / "metrics.jsonl") == reproducible_rows(
        tmp_path / "full" / "metrics.jsonl"
    )
    assert _same_weights(tmp_path / "cut", tmp_path / "full")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny):
    train(tiny("name=a", "epochs=1"), quiet=True)
    (tmp_path / "a" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot resume from"):
        train(tiny("name=a", "epochs=2"), resume=True, quiet=True)


# -- divergence -----------------------------------------------------------------------------


def _nan_loss_at(monkeypatch, step: int) -> None:
    """Fault injection: the training loss of the ``step``-th batch (from 1) is NaN."""
    from netadv.experiments.classify import CLASSIFY

    loss, calls = CLASSIFY.loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        value, weight, counts = loss(*args, **kwargs)
        return (value * float("nan") if len(calls) == step else value), weight, counts

    monkeypatch.setattr(CLASSIFY, "loss", poisoned)


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_nan_training_loss_in_the_first_epoch_says_no_checkpoint_exists(
    tmp_path, monkeypatch, tiny
):
    _nan_loss_at(monkeypatch, step=2)  # 2 steps per epoch
    with pytest.raises(TrainingDiverged) as e:
        train(tiny("name=nan"), quiet=True)
    message = str(e.value)
    assert "the training loss became nan at epoch 1, step 1" in message
    assert "no checkpoint was written" in message and "epoch 0" not in message
    assert "a lower lr (now 0.001)" in message and "grad_clip: 1.0" in message
    assert not (tmp_path / "nan" / CHECKPOINT).exists()
    assert _summary(tmp_path / "nan")["status"] == "diverged"


def test_nan_training_loss_later_names_the_checkpoint_kept(tmp_path, monkeypatch, tiny):
    _nan_loss_at(monkeypatch, step=3)  # the first step of epoch 2
    with pytest.raises(TrainingDiverged, match=r"the checkpoint of epoch 1 is kept in \S+"):
        train(tiny("name=nan"), quiet=True)
    assert torch.load(tmp_path / "nan" / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert _summary(tmp_path / "nan")["status"] == "diverged"


def test_nan_test_loss_is_never_saved_as_a_good_epoch(tmp_path, monkeypatch, tiny):
    """lr=1e30: the weights blow up in the last step of epoch 1, the training losses seen are
    finite, the evaluation's is NaN; that epoch must not become the checkpoint."""
    with pytest.raises(TrainingDiverged) as e:
        train(tiny("name=nan", "lr=1e30", "optimizer=sgd", "epochs=3"), quiet=True)
    assert "the test loss became nan in the evaluation after epoch 1" in str(e.value)
    assert "no checkpoint was written" in str(e.value)
    assert not (tmp_path / "nan" / CHECKPOINT).exists()
    assert _summary(tmp_path / "nan")["status"] == "diverged"

    # an Inf evaluation after a good epoch: the good epoch's checkpoint stays
    from netadv.experiments.classify import CLASSIFY

    evaluate, calls = CLASSIFY.evaluate, []

    def nan_in_second(*args):
        calls.append(1)
        scores, files = evaluate(*args)
        return {**scores, "test_loss": math.inf if len(calls) == 2 else scores["test_loss"]}, files

    monkeypatch.setattr(CLASSIFY, "evaluate", nan_in_second)
    with pytest.raises(TrainingDiverged, match="the checkpoint of epoch 1 is kept"):
        train(tiny("name=b"), quiet=True)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert _summary(tmp_path / "b")["status"] == "diverged"
    assert _rows(tmp_path / "b" / "metrics.jsonl")[-1]["test_loss"] == math.inf


@pytest.mark.parametrize(
    "overrides, says, not_said",
    [
        ([], ["a lower lr (now 0.001)", "grad_clip: 1.0", "warmup_epochs: 1"], ["amp", "max_gain"]),
        (
            ["grad_clip=2", "warmup_epochs=1", "amp=true"],
            ["a smaller grad_clip (now 2)", "amp: false"],
            ["warmup_epochs", "max_gain"],
        ),
        (
            ["method=sa", "model_kwargs={depth: 2, width: 32, activation: gelu}"],
            ["a smaller rewrite.max_gain (now 25)"],
            [],
        ),
        (["method=ga", "rewrite={max_gain: 10}"], ["a smaller rewrite.max_gain (now 10)"], []),
    ],
)
def test_divergence_advice_names_settings_that_exist(tiny, overrides, says, not_said):
    text = advice(tiny(*overrides))
    assert all(s in text for s in says) and not any(s in text for s in not_said)
    config_keys = set(config_mod.RunConfig().to_dict()) | {"rewrite.max_gain"}
    named = re.findall(r"([a-z_.]+)(?::| \(now)", text)
    assert named and all(n.removeprefix("a smaller ").split()[-1] in config_keys for n in named)


# -- threads and DDP ------------------------------------------------------------------------


def test_threads_are_set_for_the_run_recorded_and_restored(tmp_path, monkeypatch, tiny):
    from netadv.experiments.classify import CLASSIFY

    evaluate, seen = CLASSIFY.evaluate, []

    def watched(*args):
        seen.append(torch.get_num_threads())
        return evaluate(*args)

    monkeypatch.setattr(CLASSIFY, "evaluate", watched)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = train(tiny("name=t", "threads=1", "epochs=1"), quiet=True)
        assert seen == [1] and torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(before)
    assert summary["hardware"].endswith(", 1 thread")
    assert yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())["threads"] == 1


@pytest.mark.slow
def test_two_process_run_resumes_bit_for_bit(tmp_path, torchrun, tiny, reproducible_rows):
    """DDP on 2 CPU processes (gloo): metrics all-reduced over both ranks, only rank 0 writes;
    a run stopped after 2 epochs and extended to 3 (a constant learning rate, so the same
    schedule) equals the 3-epoch run: each rank's random state is in the checkpoint."""
    common = ["schedule=constant", "augment=true"]
    full = torchrun([*common, "name=full", "epochs=3"])
    assert full.returncode == 0, full.stderr[-2000:]
    rows = _rows(tmp_path / "full" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # written once, by rank 0
    assert rows[0]["train_examples"] == 512  # both ranks' halves summed
    assert _summary(tmp_path / "full")["status"] == "ok"
    assert len(torch.load(tmp_path / "full" / CHECKPOINT, weights_only=True)["rng"]) == 2

    cut = torchrun([*common, "name=cut", "epochs=2"])
    assert cut.returncode == 0, cut.stderr[-2000:]
    resumed = torchrun([*common, "name=cut", "epochs=3"], "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "extending the run from 2 to 3 epochs" in resumed.stderr
    assert reproducible_rows(tmp_path / "cut" / "metrics.jsonl") == reproducible_rows(
        tmp_path / "full" / "metrics.jsonl"
    )
    assert _same_weights(tmp_path / "cut", tmp_path / "full")

    # a 2-process checkpoint is not resumed by 1 process (the batches would differ)
    cfg = tiny(*common, "name=cut", "epochs=4")
    with pytest.raises(ValueError, match=r"run of 2 process\(es\); resume it with as many"):
        train(cfg, resume=True, quiet=True)


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
