"""The reproduction study's programme at toy size (what `make study-smoke` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_translate import sentences, write_mo

from netadv.errors import ConfigError
from netadv.experiments.study import load_spec, run_study

SPEC = Path(__file__).parents[2] / "configs" / "study.yaml"


def test_spec_loads_and_every_config_resolves():
    spec = load_spec(SPEC)
    names = [e.name for e in spec.experiments]
    assert "gradient-mlp-tanh-d32" in names and "ablation-vit" in names
    assert "translate-en-fr" in names
    assert all(Path(e.config).exists() for e in spec.experiments)
    names = [s.name for s in spec.summaries]
    assert names == ["gradient-depth", "gradient-depth-xavier", "cures"]
    for summary in spec.summaries:
        assert summary.x == "model_kwargs.depth"
        assert len(summary.experiments) == (6 if summary.name == "cures" else 8)


def _spec_on_fake_catalogs(tmp_path: Path) -> Path:
    """The study spec with its translation experiment reading gettext catalogs written here
    (a CI machine need not have /usr/share/locale)."""
    root = tmp_path / "locale"
    write_mo(root / "fr" / "LC_MESSAGES" / "a.mo", sentences())
    data = yaml.safe_load(SPEC.read_text())
    for exp in data["experiments"]:
        exp["config"] = str(SPEC.parent / exp["config"])
        if exp["name"].startswith("translate"):
            exp["smoke"] = [*exp.get("smoke", []), f"data_dir={root}"]
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(data))
    return spec


@pytest.mark.slow
def test_study_smoke_runs_every_experiment(tmp_path):
    spec = _spec_on_fake_catalogs(tmp_path)
    results = tmp_path / "results"
    index = run_study(spec, smoke=True, runs_dir=str(tmp_path / "runs"), report_dir=str(results))
    text = index.read_text()
    for exp in load_spec(spec).experiments:
        assert f"## {exp.name}" in text
        report = results / exp.name / "report.md"
        assert report.exists(), exp.name
        assert "diverged" not in report.read_text().split("## Runs")[-1], exp.name
    assert "netadv sweep --config" in text
    # the gradient study's cross-depth summaries: a row per (activation, depth, arm), a figure
    for name in ("gradient-depth", "gradient-depth-xavier"):
        summary = text.split(f"## {name}\n")[1].split("\n## ")[0]
        rows = [line for line in summary.splitlines() if line.startswith(("| sigmoid", "| tanh"))]
        assert len(rows) == 2 * 4 * 2, name
        assert all("n/a | n/a | n/a | n/a" not in r for r in rows)  # diagnostics were read
        assert (results / f"{name}.png").stat().st_size > 10_000
    # the family of tests: every arm against its reference, corrected for their number
    claims = text.split("## Every arm against its reference, corrected for the number")[1]
    assert "| Holm | BH q | holds |" in claims
    assert "| fashion-vit | ga-sigmoid (vs baseline-sigmoid) | 1 vs 1 |" in claims
    assert "| translate-en-fr | sa (vs baseline) |" in claims
    assert "BLEU" in (results / "translate-en-fr" / "report.md").read_text()


def test_unknown_experiment(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment"):
        run_study(SPEC, smoke=True, only=["nope"], runs_dir=str(tmp_path))


def test_summary_of_unknown_experiment_is_an_error(tmp_path):
    data = yaml.safe_load(SPEC.read_text())
    data["summaries"][0]["experiments"].append("nope")
    bad = tmp_path / "study.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unknown experiments"):
        load_spec(bad)


def test_reference_arm_must_exist(tmp_path):
    data = yaml.safe_load(SPEC.read_text())
    vit = next(e for e in data["experiments"] if e["name"] == "fashion-vit")
    ga = next(a for a in vit["arms"] if isinstance(a, dict) and a["label"] == "ga-sigmoid")
    assert ga["vs"] == "baseline-sigmoid"
    ga["vs"] = "baseline-relu"
    bad = tmp_path / "study.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="compared with 'baseline-relu', which is not one"):
        load_spec(bad)


@pytest.mark.parametrize("name", ["study.yaml", "study_cifar_gpu.yaml"])
def test_every_arm_of_every_spec_is_a_valid_config(name):
    from netadv.experiments import config as config_mod

    spec = load_spec(SPEC.parent / name)
    for exp in spec.experiments:
        base = config_mod.load(exp.config, exp.set)
        for arm in exp.arms:
            cfg = config_mod.with_overrides(base, [*arm.set, f"method={arm.method}"])
            assert cfg.validate().method == arm.method
    if name == "study_cifar_gpu.yaml":
        assert {config_mod.load(e.config).dataset for e in spec.experiments} == {
            "cifar10",
            "cifar100",
        }


def test_report_only_trains_nothing_and_lists_what_is_pending(tmp_path):
    """`--report-only` rebuilds the tables from the runs there are: a finished experiment is
    reported as after training it, one with runs missing is listed as pending, and nothing
    new is trained or written into the runs folder."""
    data = {
        "smoke": ["dataset=synthetic", "limit_train=128", "limit_test=64", "epochs=1"],
        "experiments": [
            {
                "name": name,
                "description": f"{name}: a 2-layer tanh MLP.",
                "config": str(SPEC.parent / "study_mlp.yaml"),
                "set": ["model_kwargs.depth=2", "model_kwargs.activation=tanh"],
                "arms": ["baseline", "ga"],
                "seeds": [0, 1],  # smoke: the first only
            }
            for name in ("done", "todo")
        ],
    }
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(data))
    runs, kw = tmp_path / "runs", {"smoke": True, "runs_dir": str(tmp_path / "runs")}
    trained = run_study(spec, only=["done"], report_dir=str(tmp_path / "a"), **kw).read_text()
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    index = run_study(spec, report_only=True, report_dir=str(tmp_path / "b"), **kw)
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before
    text = index.read_text()
    assert "- todo: 2 of 2 runs not yet run" in text and "## todo" not in text
    table = lambda t: t.split("## done\n")[1].split("```\n\n")[1].split("\n\n")[0]
    assert table(text) == table(trained)
    assert (tmp_path / "b" / "done" / "report.md").exists()
    assert not (tmp_path / "b" / "todo").exists()
    # a run that was killed mid-way is not counted as done
    summary = runs / "done" / "done-ga-s0" / "summary.json"
    summary.write_text(summary.read_text().replace('"status": "ok"', '"status": "running"'))
    text = run_study(spec, report_only=True, report_dir=str(tmp_path / "c"), **kw).read_text()
    assert "- done: 1 of 2 runs not yet run" in text
