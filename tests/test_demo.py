"""`make demo` end to end, on tiny synthetic data (the real one reads Fashion-MNIST)."""

from __future__ import annotations

import time

from netadv.demo import run

TINY = [
    "dataset=synthetic",
    "image_size=14",
    "limit_train=256",
    "limit_test=128",
    "epochs=1",
    "diagnostics_every=2",
]


def test_demo_writes_both_reports_and_reruns_fast(tmp_path, capsys):
    reports = run(output_dir=str(tmp_path), quiet=True, overrides=TINY)
    assert [r.parent.name for r in reports] == ["demo_vit", "demo_mlp"]
    for report in reports:
        text = report.read_text()
        assert "| baseline |" in text and (report.parent / "curves.png").exists()
    out = capsys.readouterr().out
    assert "| hdfgd |" in out and "| sa |" in out and "| ga |" in out
    assert "mean weight-gradient norm by layer" in out

    start = time.perf_counter()
    run(output_dir=str(tmp_path), quiet=True, overrides=TINY)  # finished runs are skipped
    assert "already finished" in capsys.readouterr().out
    assert time.perf_counter() - start < 30
