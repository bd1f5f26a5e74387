"""What issue 13's study needs from the harness: fine-tuning a trained baseline after a
conversion, the capacity-matched baseline, and the per-step loss log."""

from __future__ import annotations

import json

import pytest

from netadv.errors import ConfigError
from netadv.experiments.loop import train
from netadv.experiments.report.runs import load_run
from netadv.experiments.report.stats import report_table
from netadv.experiments.report.steadiness import log_losses
from netadv.experiments.report.tables import format_table

GELU = "model_kwargs={depth: 2, width: 32, activation: gelu}"


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fine_tuning_evaluates_the_conversion_first(tmp_path, tiny):
    base = train(tiny("name=base", GELU), quiet=True)
    # HD-FGD's copy init computes the trained baseline's function: same test accuracy at 0
    hd = train(tiny("name=hd", GELU, "method=hdfgd", f"init_from={tmp_path / 'base'}",
                    "epochs=1"), quiet=True)  # fmt: skip
    rows = _rows(tmp_path / "hd" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0]["test_top1"] == base["final_top1"] == hd["converted_test_top1"]
    assert hd["epochs_completed"] == 1 and "train_loss" not in rows[0]
    # a fresh base (no init_from) starts elsewhere: the weights really came from the run
    fresh = train(tiny("name=fresh", GELU, "method=hdfgd", "epochs=1"), quiet=True)
    assert "converted_test_top1" not in fresh
    # the report shows the accuracy at conversion beside the final one, only where there is one
    runs = [load_run(tmp_path / name) for name in ("base", "hd")]
    table = format_table(report_table(runs)).splitlines()
    assert table[0].split(" | ")[4] == "at conversion"
    baseline, converted = (line.split(" | ") for line in table[2:])
    assert baseline[0] == "| baseline" and baseline[4] == "n/a"  # trained from scratch
    assert converted[0] == "| hdfgd" and converted[4] == f"{100 * base['final_top1']:.2f}"
    plain = format_table(report_table([load_run(tmp_path / "fresh")], baseline="hdfgd"))
    assert "at conversion" not in plain


def test_init_from_refuses_what_does_not_fit(tmp_path, tiny):
    with pytest.raises(ConfigError, match="no checkpoint there"):
        train(tiny("name=a", f"init_from={tmp_path / 'nothing'}"), quiet=True)
    train(tiny("name=wide", "model_kwargs={depth: 2, width: 64, activation: gelu}"), quiet=True)
    with pytest.raises(ConfigError, match="do not fit this model"):
        train(tiny("name=b", GELU, f"init_from={tmp_path / 'wide'}"), quiet=True)


def test_capacity_matched_baseline_has_the_rewrites_parameters(tmp_path, tiny):
    hd = train(tiny("name=hd", GELU, "method=hdfgd"), quiet=True)
    wide = train(tiny("name=wide", GELU, "capacity_of=hdfgd"), quiet=True)
    plain = train(tiny("name=plain", GELU), quiet=True)
    assert (
        plain["params"] < wide["params"]
        and abs(wide["params"] - hd["params"]) < 0.02 * hd["params"]
    )
    with pytest.raises(ConfigError, match="capacity_of widens a baseline"):
        tiny("method=ga", "capacity_of=hdfgd")


def test_every_step_is_logged_and_the_machine_load_with_each_epoch(tmp_path, tiny):
    train(tiny("name=s"), quiet=True)
    steps = _rows(tmp_path / "s" / "steps.jsonl")
    assert [(r["epoch"], r["first_step"], len(r["loss"])) for r in steps] == [(1, 0, 2), (2, 2, 2)]
    losses = log_losses(steps)
    metrics = _rows(tmp_path / "s" / "metrics.jsonl")
    assert len(losses) == 4 and all("load" in r for r in metrics)
    train(tiny("name=q", "log_steps=false"), quiet=True)
    assert not (tmp_path / "q" / "steps.jsonl").exists()
