"""Tests for netadv.experiments.report: fake run folders with known numbers, checked against
statistics computed here from their formulas (Welch's t-test written out by hand)."""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import re

import numpy as np
import pytest
import yaml
from scipy import stats

from netadv.cli import main as cli_main
from netadv.cli.compare import add_arguments as add_compare_arguments
from netadv.cli.compare import run as compare_main
from netadv.experiments.loop import train
from netadv.experiments.report import (
    compare,
    find_run_dirs,
    format_table,
    load_run,
    report_table,
)
from netadv.experiments.run_folder import LOCK_FILE

# final Top-1 / Top-5 (fractions) and seconds per epoch of three seeds per arm
ARMS = {
    "baseline": {
        "top1": [0.900, 0.910, 0.905],
        "top5": [0.990, 0.985, 0.992],
        "spe": [10.0, 10.4, 10.2],
        "ttt": [50.0, None, 70.0],
    },
    "ga-sigmoid": {
        "top1": [0.930, 0.935, 0.941],
        "top5": [0.995, 0.996, 0.994],
        "spe": [12.1, 12.0, 12.6],
        "ttt": [30.0, 40.0, 35.0],
    },
    "sa": {
        "top1": [0.903, 0.899, 0.912],
        "top5": [0.991, 0.989, 0.990],
        "spe": [11.0, 10.1, 10.5],
        "ttt": [None, None, None],
    },
}
EPOCHS = 3


def make_run(
    root,
    arm,
    seed,
    *,
    top1=0.9,
    top5=0.99,
    spe=10.0,
    ttt=None,
    status="ok",
    task="classify",
    epochs=EPOCHS,
    dataset="cifar10",
    model="resnet18",
    diagnostics=True,
    bleu=25.0,
    ppl=8.0,
):
    """Write a run folder like the training loop does; return its path."""
    path = root / f"{arm}-s{seed}"
    path.mkdir(parents=True)
    config = {
        "name": f"{arm}-s{seed}",
        "dataset": dataset,
        "model": model,
        "method": arm,
        "activation": "sigmoid",
        "seed": seed,
        "epochs": epochs,
        "target_accuracy": 0.9,
        "task": task,
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = []
    for e in range(1, epochs + 1):
        row = {
            "epoch": e,
            "train_loss": 1.0 / e,
            "test_loss": 1.2 / e,
            "seconds": spe,
            "lr": 0.1,
            "elapsed": spe * e,
        }
        if task == "translate":
            row.update(test_bleu=bleu * e / epochs, test_ppl=ppl + epochs - e)
        else:
            row.update(train_top1=top1 * e / epochs, test_top1=top1 * e / epochs, test_top5=top5)
        rows.append(row)
    if status == "diverged":
        rows[-1]["train_loss"] = float("nan")
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {
        "name": config["name"],
        "arm": arm,
        "method": arm,
        "model": model,
        "dataset": dataset,
        "activation": "sigmoid",
        "seed": seed,
        "task": task,
        "params": 11_200_000,
        "flops": 557_000_000,
        "epochs_completed": epochs,
        "seconds_per_epoch": spe,
        "time_to_target_s": ttt,
        "epochs_to_target": None if ttt is None else 2,
        "target_accuracy": 0.9,
        "status": status,
    }
    if task == "translate":
        summary.update(final_bleu=bleu, best_bleu=bleu)
    else:
        summary.update(final_top1=top1, final_top5=top5, best_top1=top1)
    if status == "diverged":
        summary.update(final_top1=float("nan"), final_top5=float("nan"))
    (path / "summary.json").write_text(json.dumps(summary))
    if diagnostics:
        depth = 4
        diag = {
            "epoch": epochs,
            "step": 100,
            "grad_norms": {f"layer{i}": 0.1 * 2.0**-i for i in range(depth)},
            "sites": [
                {
                    "site": f"act{i}",
                    "gain": 2.0,
                    "gain_product": 2.0 ** (i + 1),
                    "mean": 0.0,
                    "var": 1.0,
                    "mean_drift": None,
                    "var_drift": None,
                    "outside": 0.01,
                }
                for i in range(depth)
            ],
        }
        (path / "diagnostics.jsonl").write_text(json.dumps(diag) + "\n")
    return path


@pytest.fixture
def three_arms(tmp_path):
    root = tmp_path / "runs"
    dirs = []
    for arm, spec in ARMS.items():
        for seed in range(3):
            dirs.append(
                make_run(
                    root,
                    arm,
                    seed,
                    top1=spec["top1"][seed],
                    top5=spec["top5"][seed],
                    spe=spec["spe"][seed],
                    ttt=spec["ttt"][seed],
                )
            )
    return dirs


def welch_by_hand(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * stats.t.sf(abs(t), dof)


def test_table_numbers_match_independent_computation(three_arms):
    rows = report_table([load_run(d) for d in three_arms])
    assert [r["arm"] for r in rows] == ["baseline", "ga-sigmoid", "sa"]
    by_arm = {r["arm"]: r for r in rows}
    base_top1 = [100 * v for v in ARMS["baseline"]["top1"]]
    for arm, spec in ARMS.items():
        row = by_arm[arm]
        assert row["n"] == 3 and row["seeds"] == [0, 1, 2] and row["diverged"] == 0
        top1 = [100 * v for v in spec["top1"]]
        mean, std = sum(top1) / 3, math.sqrt(sum((v - sum(top1) / 3) ** 2 for v in top1) / 2)
        half = stats.t.ppf(0.975, 2) * std / math.sqrt(3)
        assert row["top1_mean"] == pytest.approx(mean)
        assert row["top1_std"] == pytest.approx(std)
        assert row["top1_ci95"] == pytest.approx((mean - half, mean + half))
        top5_err = [100 * (1 - v) for v in spec["top5"]]
        assert row["top5_err_mean"] == pytest.approx(np.mean(top5_err))
        assert row["top5_err_std"] == pytest.approx(np.std(top5_err, ddof=1))
        assert row["s_per_epoch_mean"] == pytest.approx(np.mean(spec["spe"]))
        assert row["s_per_epoch_std"] == pytest.approx(np.std(spec["spe"], ddof=1))
        assert row["params"] == 11_200_000 and row["flops"] == 557_000_000
        if arm == "baseline":
            assert row["top1_p"] is None and row["top1_rel_pct"] is None
            continue
        assert row["top1_p"] == pytest.approx(welch_by_hand(top1, base_top1))
        base_err = [100 * (1 - v) for v in ARMS["baseline"]["top5"]]
        assert row["top5_err_p"] == pytest.approx(welch_by_hand(top5_err, base_err))
        assert row["s_per_epoch_p"] == pytest.approx(
            welch_by_hand(spec["spe"], ARMS["baseline"]["spe"])
        )
        base_mean = np.mean(base_top1)
        assert row["top1_rel_pct"] == pytest.approx(100 * (mean - base_mean) / base_mean)
    # time to target: mean over the seeds that reached it, and k/n
    assert by_arm["baseline"]["time_to_target_mean"] == pytest.approx(60.0)
    assert (by_arm["baseline"]["target_reached"], by_arm["baseline"]["target_runs"]) == (2, 3)
    assert by_arm["sa"]["time_to_target_mean"] is None and by_arm["sa"]["target_reached"] == 0
    table = format_table(rows)
    assert table.count("\n") == 4  # header, rule, three arms
    assert "60.0 (2/3 reached)" in table and "not reached (0/3)" in table
    assert "11.20M" in table and "557.00M" in table


def test_p_value_is_na_with_one_seed(tmp_path):
    dirs = [make_run(tmp_path, "baseline", s, top1=0.9 + 0.01 * s) for s in range(3)]
    dirs.append(make_run(tmp_path, "ga", 0, top1=0.95))
    rows = report_table([load_run(d) for d in dirs])
    ga = rows[1]
    assert ga["n"] == 1 and ga["top1_p"] is None and ga["top1_std"] is None
    assert ga["top1_ci95"] is None and ga["top1_mean"] == pytest.approx(95.0)
    line = format_table(rows).splitlines()[3]
    cells = line.split(" | ")
    assert cells[:4] == ["| ga", "1", "95.00", "n/a"] and cells[6:8] == ["n/a", "n/a / 1.000"]


def test_p_value_is_na_when_neither_side_varies(tmp_path):
    dirs = [make_run(tmp_path, "baseline", s, top1=0.9, spe=10.0 + s) for s in range(2)]
    dirs += [make_run(tmp_path, "ga", s, top1=0.95, spe=10.0) for s in range(2)]
    ga = report_table([load_run(d) for d in dirs])[1]
    assert ga["top1_p"] is None
    assert ga["s_per_epoch_p"] is not None  # only one side constant: the test is defined


def test_diverged_runs_are_counted_listed_and_kept_out_of_the_statistics(tmp_path):
    dirs = [make_run(tmp_path, "baseline", s, top1=0.9 + 0.01 * s) for s in range(3)]
    dirs += [make_run(tmp_path, "hdfgd", s, top1=0.92 + 0.01 * s) for s in range(2)]
    dirs.append(make_run(tmp_path, "hdfgd", 2, status="diverged", diagnostics=False))
    dirs.append(make_run(tmp_path, "hdfgd", 3, status="running", diagnostics=False))
    rows = report_table([load_run(d) for d in dirs])
    hd = rows[1]
    assert (hd["n"], hd["diverged"], hd["running"]) == (2, 1, 1)
    assert hd["top1_mean"] == pytest.approx(92.5)
    assert "1 diverged, 1 running" in format_table(rows)
    report = compare(dirs, tmp_path / "out").read_text()
    assert "- hdfgd, seed 2: diverged after 3 epoch(s)" in report
    assert "- hdfgd, seed 3: running" in report
    assert "Of its 4 runs, not in these numbers: 1 diverged, 1 running." in report


def test_translation_runs_use_bleu_and_perplexity(tmp_path):
    dirs = [
        make_run(tmp_path, "baseline", s, task="translate", bleu=25.0 + s, ppl=8.0 + s)
        for s in range(3)
    ]
    dirs += [
        make_run(tmp_path, "ga", s, task="translate", bleu=27.0 + s, ppl=7.0) for s in range(3)
    ]
    rows = report_table([load_run(d) for d in dirs])
    assert "top1_mean" not in rows[0]
    assert rows[0]["bleu_mean"] == pytest.approx(26.0)
    assert rows[0]["ppl_mean"] == pytest.approx(9.0)  # test_ppl of the last epoch
    assert rows[1]["bleu_p"] == pytest.approx(welch_by_hand([27, 28, 29], [25, 26, 27]))
    assert rows[1]["bleu_rel_pct"] == pytest.approx(100 * 2 / 26)
    table = format_table(rows)
    assert "BLEU" in table and "test ppl" in table and "Top-1" not in table
    report = compare(dirs, tmp_path / "out").read_text()
    assert (
        "mean BLEU 28.00 vs 26.00 for baseline" in report
        and "%" not in report.split("BLEU 28")[1][:5]
    )
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0


def test_compare_writes_report_and_plots(three_arms, tmp_path):
    path = compare(three_arms)
    assert path == tmp_path / "runs" / "report.md"  # the runs' common parent
    report = path.read_text()
    for name in ("curves.png", "grad_norms.png", "gain_product.png"):
        assert (path.parent / name).stat().st_size > 1000
        assert f"]({name})" in report
    assert "dataset: cifar10; model: resnet18; epochs: 3" in report
    assert "baseline 3 (0, 1, 2)" in report
    assert "not a like-for-like" not in report
    # ga is clearly better (p < 0.05); sa is higher on average but within seed noise
    ga_p = welch_by_hand([93.0, 93.5, 94.1], [90.0, 91.0, 90.5])
    sa_p = welch_by_hand([90.3, 89.9, 91.2], [90.0, 91.0, 90.5])
    assert ga_p < 0.05 < sa_p
    assert "**ga-sigmoid**: mean Top-1 93.53% vs 90.50% for baseline" in report
    assert "better than the baseline" in report and "significant at p<0.05" in report
    assert "The difference is not significant at p<0.05" in report


def test_compare_without_diagnostics_says_the_plots_were_skipped(tmp_path):
    dirs = [
        make_run(tmp_path, arm, s, top1=0.9, diagnostics=False)
        for arm in ("baseline", "sa")
        for s in range(2)
    ]
    report = compare(dirs, tmp_path / "out").read_text()
    assert "Not plotted: no finished run has diagnostics.jsonl with grad_norms" in report
    assert "grad_norms.png" not in report and "curves.png" in report
    assert not (tmp_path / "out" / "grad_norms.png").exists()


def test_warns_when_arms_differ_in_epochs_or_dataset(tmp_path):
    dirs = [make_run(tmp_path, "baseline", s, diagnostics=False) for s in range(2)]
    dirs += [
        make_run(tmp_path, "ga", s, epochs=2, dataset="cifar100", diagnostics=False)
        for s in range(2)
    ]
    report = compare(dirs, tmp_path / "out").read_text()
    assert "**Warning: not a like-for-like comparison.**" in report
    assert "dataset (baseline: cifar10; ga: cifar100)" in report
    assert "epochs (baseline: 3; ga: 2)" in report


def test_folder_of_runs_is_searched_and_baseline_can_be_named(three_arms, tmp_path):
    assert sorted(find_run_dirs([tmp_path / "runs", three_arms[0]])) == sorted(three_arms)
    rows = report_table([load_run(d) for d in three_arms], baseline="sa")
    assert [r["arm"] for r in rows] == ["sa", "baseline", "ga-sigmoid"]
    assert rows[0]["top1_p"] is None and rows[1]["top1_p"] is not None
    with pytest.raises(ValueError, match="baseline arm 'nope' is not among the arms"):
        compare(three_arms, tmp_path / "out", baseline="nope")


@pytest.mark.parametrize(
    "damage, error, message",
    [
        (lambda p: (p / "summary.json").unlink(), FileNotFoundError, r"summary.json: missing"),
        (
            lambda p: (p / "summary.json").write_text("{not json"),
            ValueError,
            r"summary.json: not valid JSON",
        ),
        (lambda p: (p / "metrics.jsonl").unlink(), FileNotFoundError, r"metrics.jsonl: missing"),
        (
            lambda p: (p / "metrics.jsonl").open("a").write('{"epoch": 4, "train_lo'),
            ValueError,
            r"metrics.jsonl, line 4: not valid JSON",
        ),
        (
            lambda p: (p / "config.yaml").write_text("a: [1,"),
            ValueError,
            r"config.yaml: not valid YAML",
        ),
        (
            lambda p: (p / "summary.json").write_text('{"arm": "x", "status": "ok"}'),
            ValueError,
            r"status is 'ok' but 'final_top1' is missing",
        ),
    ],
    ids=[
        "no-summary",
        "bad-summary",
        "no-metrics",
        "truncated-metrics",
        "bad-config",
        "summary-without-top1",
    ],
)
def test_missing_or_corrupt_files_give_one_line_errors(tmp_path, damage, error, message):
    run = make_run(tmp_path, "baseline", 0)
    damage(run)
    with pytest.raises(error, match=message) as info:
        load_run(run)
    text = str(info.value)
    assert "\n" not in text and "rerun it or leave that run out" in text
    assert info.value.__cause__ is None


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        compare([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no run folders"):
        compare([tmp_path / "empty"])


def test_cli_prints_report_path_and_table(three_arms, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    out = tmp_path / "cli-out"
    args = parser.parse_args([str(tmp_path / "runs"), "-o", str(out), "--baseline", "sa"])
    assert compare_main(args) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"wrote {out / 'report.md'}"
    assert "| arm | n | Top-1 (%) |" in printed
    assert printed.splitlines()[3].startswith("| sa | 3 |")
    assert "against **sa**" in (out / "report.md").read_text()


def test_an_arm_can_be_tested_against_another_reference(three_arms, tmp_path):
    """GA with sigmoid is judged against the baseline with sigmoid, not the GELU baseline."""
    runs = [load_run(d) for d in three_arms]
    rows = {r["arm"]: r for r in report_table(runs, references={"ga-sigmoid": "sa"})}
    ga, sa = rows["ga-sigmoid"], rows["sa"]
    top1 = {a: [100 * v for v in ARMS[a]["top1"]] for a in ARMS}
    assert ga["reference"] == "sa" and sa["reference"] == "baseline"
    assert ga["top1_p"] == pytest.approx(welch_by_hand(top1["ga-sigmoid"], top1["sa"]))
    assert ga["top1_rel_pct"] == pytest.approx(
        100 * (np.mean(top1["ga-sigmoid"]) - np.mean(top1["sa"])) / np.mean(top1["sa"])
    )
    assert sa["top1_p"] == pytest.approx(welch_by_hand(top1["sa"], top1["baseline"]))
    table = format_table(list(rows.values()))
    assert "| ga-sigmoid (vs sa) | 3 |" in table and "| sa | 3 |" in table
    with pytest.raises(ValueError, match="compared with 'nope', which has no runs"):
        report_table(runs, references={"ga-sigmoid": "nope"})

    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    out = tmp_path / "cli-vs"
    args = parser.parse_args([str(tmp_path / "runs"), "-o", str(out), "--vs", "ga-sigmoid=sa"])
    assert compare_main(args) == 0
    report = (out / "report.md").read_text()
    assert "ga-sigmoid (vs sa)" in report and "for sa" in report.split("**ga-sigmoid**")[1]
    with pytest.raises(ValueError, match="--vs takes ARM=REF"):
        compare_main(parser.parse_args([str(tmp_path / "runs"), "--vs", "ga-sigmoid"]))


def test_target_can_be_set_after_the_runs(three_arms):
    """Time to target read off the per-epoch metrics for a target the runs were not given."""
    runs = [load_run(d) for d in three_arms]
    rows = {r["arm"]: r for r in report_table(runs, target=0.5)}
    for arm, spec in ARMS.items():
        # test_top1 grows as top1 * e / EPOCHS: the first epoch at or above 0.5
        epochs = [
            next(e for e in range(1, EPOCHS + 1) if t * e / EPOCHS >= 0.5) for t in spec["top1"]
        ]
        expected = np.mean([spe * e for spe, e in zip(spec["spe"], epochs)])
        assert rows[arm]["time_to_target_mean"] == pytest.approx(expected), arm
        assert rows[arm]["target"] == 0.5 and rows[arm]["target_reached"] == 3
    never = report_table(runs, target=0.99)[0]
    assert never["target_reached"] == 0 and never["time_to_target_mean"] is None


# -- runs that died, arms that pool different runs ------------------------------------------


def test_a_run_whose_process_is_gone_is_shown_as_died(tmp_path, tiny, kill_in_evaluation):
    dirs = [tmp_path / f"b{seed}" for seed in range(3)]
    for seed in range(2):
        train(tiny(f"name=b{seed}", f"seed={seed}"), quiet=True)
    kill_in_evaluation(2)  # killed in epoch 2: its summary still says "running"
    with pytest.raises(KeyboardInterrupt):
        train(tiny("name=b2", "seed=2"), quiet=True)
    died = load_run(dirs[2])
    assert died.summary["status"] == "running" and died.status == "died"

    rows = report_table([load_run(d) for d in dirs])
    assert (rows[0]["n"], rows[0]["died"], rows[0]["running"]) == (2, 1, 0)
    assert "| 1 died |" in format_table(rows)
    report = compare(dirs, tmp_path / "out").read_text()
    assert "- baseline, seed 2: died after 1 epoch(s)" in report
    assert "| baseline | 2 | died |" in report and "running" not in report.split("## Runs")[1]

    # while a process holds its lock, the same folder is a running run
    with open(dirs[2] / LOCK_FILE) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert load_run(dirs[2]).status == "running"


def _set_config(run, **values) -> None:
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}))


@pytest.mark.parametrize(
    "key, change, shown",
    [
        ("epochs", {"epochs": 2}, "epochs (2 / 3)"),
        ("dataset", {"dataset": "cifar100"}, "dataset (cifar10 / cifar100)"),
        ("model_kwargs", {"model_kwargs": {"depth": 4}}, 'model_kwargs (null / {"depth": 4})'),
        ("limit_train", {"limit_train": 1000}, "limit_train (1000 / null)"),
    ],
)
def test_an_arm_pooling_runs_of_different_settings_is_refused(tmp_path, capsys, key, change, shown):
    dirs = [
        make_run(tmp_path, arm, s, diagnostics=False)
        for arm in ("baseline", "sa")
        for s in range(2)
    ]
    _set_config(dirs[1], **change)
    with pytest.raises(
        ValueError, match="arm baseline pools runs that differ in " + re.escape(shown)
    ):
        compare(dirs, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    argv = [*map(str, dirs), "-o", str(tmp_path / "out")]
    assert cli_main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netadv compare: error: arm baseline pools") and err.count("\n") == 1
    assert "pass --allow-mixed to pool them anyway" in err

    assert cli_main(["compare", *argv, "--allow-mixed"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert (
        f"> **Mixed arms (--allow-mixed):** arm baseline pools runs that differ in {shown}."
        in report
    )


def test_translation_arms_are_checked_on_their_data_settings(tmp_path):
    dirs = [
        make_run(tmp_path, a, s, task="translate", diagnostics=False)
        for a in ("baseline", "ga")
        for s in range(2)
    ]
    _set_config(dirs[0], vocab_size=8000)
    with pytest.raises(
        ValueError, match=r"arm baseline pools runs that differ in vocab_size \(8000 / null\)"
    ):
        compare(dirs, tmp_path / "out")
