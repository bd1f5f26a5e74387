"""``netadv train`` and ``netadv sweep``: what a user gets before any training starts (a
config is required, bad values are one line with exit status 2) and the --threads flag."""

from __future__ import annotations

import pytest
import torch

from netadv.cli import build_parser, main
from netadv.cli.train import load_config


def _error(capsys, *argv: str) -> str:
    """The one line ``netadv ARGV`` prints on stderr, after checking it exits with 2."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_no_config_says_how_to_start(capsys, command):
    err = _error(capsys, command, "--set", "epochs=1")
    assert err == (
        f"netadv {command}: error: no --config given: start from a shipped one, e.g. "
        f"`netadv {command} --config configs/smoke.yaml` (configs/ holds the others)"
    )


def test_config_that_is_a_folder(tmp_path, capsys):
    err = _error(capsys, "train", "--config", str(tmp_path))
    assert err == (
        f"netadv train: error: --config {tmp_path} is a folder; give a YAML file, e.g. "
        "--config configs/smoke.yaml"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("device=tpu", "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        ("label_smoothing=1", "label_smoothing must be in [0, 1), got 1.0"),
        ("weight_decay=-0.1", "weight_decay must be >= 0, got -0.1"),
        ("threads=0", "threads must be >= 1 (null: torch's default), got 0"),
    ],
)
def test_bad_values_are_one_line_before_training(tmp_path, capsys, override, message):
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: synthetic\noutput_dir: {tmp_path}\n")
    err = _error(capsys, "train", "--config", str(config), "--set", override)
    assert err == f"netadv train: error: {message}"
    assert list(tmp_path.iterdir()) == [config]  # nothing trained, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message for device=cuda where no GPU is present")
def test_cuda_without_a_gpu(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: synthetic\n")
    err = _error(capsys, "train", "--config", str(config), "--set", "device=cuda")
    assert err == (
        "netadv train: error: device=cuda but torch sees no CUDA GPU on this machine: use "
        "device=cpu (or auto)"
    )


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_threads_flag_is_the_threads_key(tmp_path, command):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: synthetic\n")
    args = build_parser().parse_args([command, "--config", str(config), "--threads", "1"])
    assert load_config(args).threads == 1
    args = build_parser().parse_args([command, "--config", str(config)])
    assert load_config(args).threads is None  # torch's default unless asked
