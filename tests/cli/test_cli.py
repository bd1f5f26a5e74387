"""The command line's own subcommands: ``netadv list`` and ``netadv plot`` (with
``plots.plot_pair`` behind it), and the parser's subcommands. The others are tested with what
they run (test_experiments, test_report, test_study, test_rewrite, test_bench, test_demo)."""

from __future__ import annotations

import re

import pytest

from netadv.cli import COMMANDS, build_parser, main
from netadv.plots import plot_pair

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(text: str) -> dict[str, list[str]]:
    """The table's rows by activation name, cells split on runs of two or more spaces."""
    lines = text.splitlines()
    return {
        cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[2:]) if cells[0]
    }


def test_list_prints_the_registry_as_a_table(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "name",
        "A_f",
        "stable",
        "interval",
        "HD-FGD",
        "decomposition",
    ]
    rows = _rows(out.split("\n\n")[0])
    assert rows["sigmoid"] == ["sigmoid", "closed form", "[-3.134, 3.134]", "-"]
    assert rows["gelu"] == ["gelu", "none", "-", "x_1*Phi(x_2) (k=2)"]
    assert rows["relu"][1:] == ["none", "-", "-"]
    assert out.rstrip().endswith("stable interval: where the gain 1/|f'| <= max_gain=25")


def test_list_max_gain_narrows_the_stable_intervals(capsys):
    assert main(["list", "--max-gain", "10"]) == 0
    out = capsys.readouterr().out
    assert _rows(out.split("\n\n")[0])["sigmoid"][2] == "[-2.063, 2.063]"
    assert out.rstrip().endswith("max_gain=10")


def test_plot_writes_a_png(tmp_path, capsys):
    path = tmp_path / "sigmoid.png"
    assert main(["plot", "sigmoid", "-o", str(path), "--max-gain", "10", "--anchor", "zero"]) == 0
    assert capsys.readouterr().out == f"wrote {path}\n"
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_plot_pair_of_an_activation_without_adversarial(tmp_path):
    # relu has no adversarial: f and f' are plotted, and the title says why
    path = plot_pair("relu", tmp_path / "relu.png")
    assert path == tmp_path / "relu.png"
    assert path.read_bytes()[:8] == PNG


def test_plot_unknown_activation_is_a_one_line_error(tmp_path, capsys):
    assert main(["plot", "nope", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netadv plot: error: unknown activation 'nope'") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_every_subcommand_is_in_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert list(COMMANDS) == [
        "list",
        "plot",
        "demo",
        "train",
        "sweep",
        "study",
        "plan",
        "bench",
        "compare",
        "doctor",
    ]
    assert "{" + ",".join(COMMANDS) + "}" in out
