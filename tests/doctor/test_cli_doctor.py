"""``netadv doctor`` on the command line: -o writes the report and plots, --json parses, --config
feeds a trial, and a bad call is one line."""

from __future__ import annotations

import json

from netadv.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
MLP = [
    "--model",
    "netadv.experiments.mlp:MLP",
    "--model-kwargs",
    "in_features=64,num_classes=10,depth=10,width=32,activation=sigmoid",
    "--input-shape",
    "16,64",
]


def test_output_folder_holds_the_report_and_plots(tmp_path, capsys):
    assert main(["doctor", *MLP, "-o", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("netadv doctor: MLP, 10 activation sites")
    assert "recommendation: GA (sigmoid)" in out
    report = (tmp_path / "report.md").read_text()
    assert "**Recommendation: GA.**" in report and "## The plan it would apply" in report
    for name in ("gain.png", "gradient_norms.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
        assert f"]({name})" in report
    assert json.loads((tmp_path / "diagnosis.json").read_text())["recommendation"]["method"] == "ga"


def test_json_prints_to_dict(capsys):
    assert main(["doctor", *MLP, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "static" and out["recommendation"]["method"] == "ga"
    assert len(out["sites"]) == 10 and out["gradient_norms"][0]["layer"] == "1"


def test_config_gives_the_trial_its_data_and_model(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "dataset: synthetic\nmodel: mlp\nlimit_train: 256\nbatch_size: 32\n"
        "model_kwargs: {depth: 3, width: 16, activation: tanh}\n"
    )
    argv = ["doctor", "--config", str(cfg), "--set", "model_kwargs.depth=4", "--steps", "6"]
    assert main([*argv, "--methods", "ga", "--quiet", "-o", str(tmp_path / "out"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "trial" and len(out["sites"]) == 4
    assert [a["name"] for a in out["trial"]["arms"]] == ["baseline", "ga"]
    assert out["inputs"].startswith("first batch of data (32, 1, 16, 16)")
    assert (tmp_path / "out" / "trial.png").read_bytes()[:8] == PNG


def test_bad_calls_are_one_line(capsys):
    assert main(["doctor"]) == 2
    assert capsys.readouterr().err.strip() == (
        "netadv doctor: error: give --model SPEC (and --input-shape) or --config CFG"
    )
    assert main(["doctor", "--model", "torchvision:resnet18", "--input-shape", "2,1,32,32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "expects (N, 3, H, W)" in err
