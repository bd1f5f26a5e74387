"""tensorboard=true: the events a run writes, read back with TensorBoard's own reader, and
none repeated after a resume."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.loop import train
from netadv.experiments.tracking import TENSORBOARD_DIR

pytest.importorskip("tensorboard")

# 2 steps per epoch; a diagnostics row every 2 steps (steps 0, 2, 4)
TRACKED = ["tensorboard=true", "epochs=3", "diagnostics=true", "diagnostics_every=2"]


def _events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0}
    )
    events.Reload()
    return events


def _steps(events, tag: str) -> list[int]:
    read = events.Histograms if tag in events.Tags()["histograms"] else events.Scalars
    return [e.step for e in read(tag)]


def test_tensorboard_scalars_histograms_and_config(tmp_path, tiny):
    summary = train(tiny("name=tb", *TRACKED), quiet=True)
    events = _events(tmp_path / "tb")
    tags = events.Tags()
    assert {"train/loss", "train/lr", "diagnostics/gain_product"} <= set(tags["scalars"])
    metrics = {"epoch", "train_loss", "train_top1", "test_loss", "test_top1", "seconds", "lr"}
    assert {f"epoch/{key}" for key in metrics} <= set(tags["scalars"])
    assert set(tags["histograms"]) == {"diagnostics/gain", "diagnostics/grad_norm"}
    assert tags["tensors"] == ["config/text_summary"]

    assert _steps(events, "train/loss") == [0, 1, 2, 3, 4, 5]  # every step, once
    assert _steps(events, "epoch/test_top1") == [1, 3, 5]  # each epoch's last step
    assert _steps(events, "diagnostics/gain") == [0, 2, 4]
    assert _steps(events, "diagnostics/grad_norm") == [0, 2, 4]
    # the values are the run's: the last epoch's accuracy, a histogram over the 2 sites
    assert events.Scalars("epoch/test_top1")[-1].value == pytest.approx(summary["final_top1"])
    assert events.Histograms("diagnostics/gain")[0].histogram_value.num == 2
    assert events.Histograms("diagnostics/grad_norm")[0].histogram_value.num == 3
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "tensorboard: true" in config and "name: tb" in config


def test_tensorboard_after_a_resume_has_each_step_once(tmp_path, tiny, kill_in_evaluation):
    """Killed in epoch 3's evaluation (its steps 4 and 5 already logged), resumed from the
    epoch-2 checkpoint: the events equal the uninterrupted run's, none twice."""
    train(tiny("name=full", *TRACKED), quiet=True)
    kill_in_evaluation(3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny("name=cut", *TRACKED), quiet=True)
    assert _steps(_events(tmp_path / "cut"), "train/loss") == [0, 1, 2, 3, 4, 5]
    train(tiny("name=cut", *TRACKED), resume=True, quiet=True)

    cut, full = _events(tmp_path / "cut"), _events(tmp_path / "full")
    for tag in ("train/loss", "train/lr", "epoch/test_top1", "diagnostics/gain_product"):
        assert [(e.step, e.value) for e in cut.Scalars(tag)] == [
            (e.step, e.value) for e in full.Scalars(tag)
        ], tag
    for tag in ("diagnostics/gain", "diagnostics/grad_norm"):
        assert _steps(cut, tag) == _steps(full, tag) == [0, 2, 4]
    # the config at each start: the run's, and the resume's at the checkpoint's step
    assert [e.step for e in cut.Tensors("config/text_summary")] == [0, 4]


def test_tensorboard_without_the_package_is_one_line(tiny, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'netadv\[tracking\]'") as e:
        tiny("tensorboard=true")
    assert "\n" not in str(e.value)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    # found by the config check but not importable when the run starts: the same line
    cfg = tiny("name=t", "tensorboard=true", "epochs=1")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"tensorboard=true needs the tensorboard package"):
        train(cfg, quiet=True)


def test_tensorboard_off_writes_no_events(tmp_path, tiny):
    train(tiny("name=a", "epochs=1"), quiet=True)
    assert not (tmp_path / "a" / TENSORBOARD_DIR).exists()
    assert config_mod.RunConfig().tensorboard is False
