"""The reproduction study's programme at toy size (what `make study-smoke` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netadv.errors import ConfigError
from netadv.experiments.study import load_spec, run_study

SPEC = Path(__file__).parents[1] / "configs" / "study.yaml"


def test_spec_loads_and_every_config_resolves():
    spec = load_spec(SPEC)
    names = [e.name for e in spec.experiments]
    assert "gradient-mlp-tanh-d32" in names and "ablation-vit" in names
    assert all(Path(e.config).exists() for e in spec.experiments)


@pytest.mark.slow
def test_study_smoke_runs_every_experiment(tmp_path):
    index = run_study(
        SPEC, smoke=True, runs_dir=str(tmp_path / "runs"), report_dir=str(tmp_path / "results")
    )
    text = index.read_text()
    for exp in load_spec(SPEC).experiments:
        assert f"## {exp.name}" in text
        report = tmp_path / "results" / exp.name / "report.md"
        assert report.exists(), exp.name
        assert "diverged" not in report.read_text().split("## Runs")[-1], exp.name
    assert "netadv sweep --config" in text


def test_unknown_experiment(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment"):
        run_study(SPEC, smoke=True, only=["nope"], runs_dir=str(tmp_path))
