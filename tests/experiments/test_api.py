"""Training from a script: netadv.experiments.fit and its config forms."""

from __future__ import annotations

import json

import pytest
import yaml

import netadv.experiments as experiments
from netadv.errors import ConfigError
from netadv.experiments import RunConfig, as_config, fit, load_config


def test_fit_a_mapping_with_overrides_returns_the_summary(tmp_path, tiny):
    data = tiny().to_dict()
    summary = fit(data, name="script", epochs=1, quiet=True)
    assert summary["status"] == "ok" and summary["epochs_completed"] == 1
    assert summary == json.loads((tmp_path / "script" / "summary.json").read_text())
    # resume=True continues the same run (here: extended by an epoch)
    more = fit(data, name="script", epochs=2, resume=True, quiet=True)
    assert more["epochs_completed"] == 2


def test_fit_a_yaml_file_with_a_dotted_override(tmp_path, tiny_file):
    summary = fit(tiny_file("name=y", "epochs=1"), quiet=True, **{"model_kwargs.width": 16})
    recorded = yaml.safe_load((tmp_path / "y" / "config.yaml").read_text())
    assert recorded["model_kwargs"] == {"depth": 2, "width": 16, "activation": "tanh"}
    assert summary["params"] == 256 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10


def test_as_config_forms_and_errors(tiny):
    cfg = tiny("rewrite={period: 2}")
    # a mapping replaces a mapping key; a dotted key sets one entry; the given config stays
    assert as_config(cfg, rewrite={"start": "A"}).rewrite == {"start": "A"}
    assert as_config(cfg, **{"rewrite.start": "A"}).rewrite == {"period": 2, "start": "A"}
    assert cfg.rewrite == {"period": 2}
    assert as_config({"lr": "3e-4"}).lr == 3e-4 and isinstance(as_config({}), RunConfig)
    assert load_config(None, ["lr=0.1"]).lr == 0.1
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        as_config(cfg, epoch=3)
    with pytest.raises(ConfigError, match="a RunConfig, a mapping of config keys or a YAML"):
        as_config(3)
    with pytest.raises(ConfigError, match="not found"):
        fit("missing.yaml")


def test_the_package_exports_the_api():
    assert set(experiments.__all__) == {
        "RunConfig",
        "TrainingDiverged",
        "as_config",
        "fit",
        "load_config",
    }
    assert all(getattr(experiments, name).__doc__ for name in experiments.__all__)
