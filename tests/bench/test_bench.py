"""``netadv bench --quick``: every suite prints its tables with sane numbers (no timing asserts)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from netadv import bench
from netadv.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tables():
    lines: list[str] = []
    cfg = bench.BenchConfig(quick=True, backends=("eager",), repeats=2)
    out = bench.run(list(bench.SUITES), cfg, echo=lines.append)
    return {t.suite: [u for u in out if u.suite == t.suite] for t in out}, "\n".join(lines)


def _finite_positive(values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def test_every_suite_prints_a_table(tables):
    by_suite, text = tables
    assert sorted(by_suite) == sorted(bench.SUITES)
    for suite in bench.SUITES:
        assert f"{suite}: " in text
    assert "median ms" in text and "min-max ms" in text


def test_p1_times_every_adversarial_against_native(tables):
    (p1,) = tables[0]["P1"]
    cases = p1.column("case")
    assert cases[:2] == ["F.gelu (native)", "F.silu (native)"]
    assert {f"A[{n}]" for n in bench.P1_ADVERSARIAL} | {"A[generic (sigmoid)]"} <= set(cases)
    ratios = p1.column("vs gelu")
    assert ratios[0] == 1.0 and _finite_positive(ratios)
    assert _finite_positive(p1.column("median ms"))


def test_p2_every_netadv_site_saves_only_its_input(tables):
    (p2,) = tables[0]["P2"]
    for site, ratio, note in zip(p2.column("site"), p2.column("ratio"), p2.column("note")):
        if note.startswith("reference"):
            continue
        assert ratio == 1.0, site
    geglu = p2.column("ratio")[p2.column("site").index("GEGLU x1*gelu(x2)")]
    assert geglu == 1.5  # the probe sees GEGLU's extra saves


def test_p3_compares_blocks_of_equal_parameters(tables):
    (p3,) = tables[0]["P3"]
    params = dict(zip(p3.column("block"), p3.column("params")))
    assert params["HD-FGD gelu"] == params["SA gelu"] == params["GEGLU (hand-written)"]
    assert _finite_positive(p3.column("vs GEGLU"))


def test_p4_reports_flops_and_parameters_beside_ratios(tables):
    p4 = tables[0]["P4"]
    assert [t.title.split(":")[0] for t in p4] == ["ViT", "ResNet"]
    for t in p4:
        rows = {r[0]: dict(zip(t.columns, r)) for r in t.rows}
        assert rows["GA (sigmoid)"]["FLOP ratio"] == 1.0
        assert rows["GA (sigmoid)"]["params"] == rows["baseline (sigmoid)"]["params"]
        full = rows["HD-FGD"]["FLOP ratio"]
        assert 1.0 < full < 2.0  # k=2 on the producers only
        assert rows["HD-FGD"]["target"] == pytest.approx(1.05 * full)
        assert rows["SA match_params"]["params"] <= rows[t.rows[0][0]]["params"]
        assert rows["SA match_params"]["target"] == 1.05
        for col in ("train ratio", "b1 ratio"):
            assert _finite_positive([r[col] for r in rows.values()])


def test_p6_times_plan_and_rewrite(tables):
    (p6,) = tables[0]["P6"]
    assert set(p6.column("method")) == {"hdfgd", "sa"}
    assert all(n > 0 for n in p6.column("sites"))
    assert _finite_positive(p6.column("plan"))
    assert _finite_positive(p6.column("rewrite (inplace)"))


def test_cli_runs_a_suite_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--suite", "p2", "--json", str(out), "--clock", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "machine:" in text and "P2: bytes autograd holds" in text
    data = json.loads(out.read_text())
    assert data["tables"][0]["suite"] == "P2"


def test_cli_rejects_unknown_suite_and_backend(capsys):
    assert main(["bench", "--suite", "P9"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert main(["bench", "--suite", "P2", "--backend", "jit"]) == 2


def test_measure_ratios_are_per_round_against_the_reference():
    x = torch.randn(1000)
    res = bench.measure({"a": lambda: x.sin(), "b": lambda: (x.sin(), x.cos())}, "a", repeats=3)
    assert res["a"].ratio == 1.0 and res["b"].ratio > 0
    assert res["a"].min_ms <= res["a"].median_ms <= res["a"].max_ms
