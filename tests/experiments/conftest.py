"""What the harness tests share: a tiny image run's config, and `netadv train` under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netadv.experiments import config as config_mod
from netadv.experiments.classify import CLASSIFY

# a seconds-long image run: synthetic data, augmented (the image datasets' default)
TINY = [
    "dataset=synthetic",
    "model=mlp",
    "model_kwargs={depth: 2, width: 32, activation: tanh}",
    "epochs=2",
    "batch_size=256",
    "limit_train=512",
    "limit_test=256",
]


@pytest.fixture
def tiny(tmp_path):
    """``tiny(*overrides)``: the tiny run's config, writing under ``tmp_path``."""

    def make(*extra: str) -> config_mod.RunConfig:
        return config_mod.load(None, [*TINY, f"output_dir={tmp_path}", *extra])

    return make


@pytest.fixture
def tiny_file(tmp_path):
    """``tiny_file(*overrides)``: the tiny run's config as a YAML file (for ``--config``)."""

    def make(*extra: str) -> Path:
        path = tmp_path / f"tiny-{len(list(tmp_path.glob('tiny-*.yaml')))}.yaml"
        data = config_mod.apply_overrides({}, [*TINY, f"output_dir={tmp_path}", *extra])
        path.write_text(yaml.safe_dump(data))
        return path

    return make


@pytest.fixture
def torchrun(tmp_path):
    """``torchrun(overrides, *args, base=TINY)``: ``netadv train ARGS`` of a config file of
    ``base`` + ``output_dir=tmp_path`` + ``overrides`` on 2 CPU processes (gloo); returns the
    finished process, its output as text."""

    def launch(
        overrides: list[str], *args: str, base: list[str] = TINY
    ) -> subprocess.CompletedProcess:
        config = tmp_path / f"torchrun-{len(list(tmp_path.glob('torchrun-*')))}.yaml"
        data = config_mod.apply_overrides({}, [*base, f"output_dir={tmp_path}", *overrides])
        config.write_text(yaml.safe_dump(data))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "netadv",
            "train",
            "--quiet",
            f"--config={config}",
            *args,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        src = str(Path(__file__).resolve().parents[2] / "src")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=300)
        finally:  # never leave worker processes behind
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    return launch


@pytest.fixture
def kill_in_evaluation(monkeypatch):
    """``kill_in_evaluation(call)``: fault injection, the next run is killed (a
    KeyboardInterrupt) in its ``call``-th evaluation, after the checkpoint of the epoch
    before (and that epoch's diagnostics rows) was written."""

    def arm(call: int) -> None:
        evaluate, calls = CLASSIFY.evaluate, []

        def killed(*args, **kwargs):
            calls.append(1)
            if len(calls) == call:
                monkeypatch.setattr(CLASSIFY, "evaluate", evaluate)
                raise KeyboardInterrupt
            return evaluate(*args, **kwargs)

        monkeypatch.setattr(CLASSIFY, "evaluate", killed)

    return arm


# what a run measures of the machine rather than of the model: never reproduced by a resume
TIMING = ("seconds", "elapsed", "eval_seconds", "load")


@pytest.fixture
def reproducible_rows():
    """``reproducible_rows(metrics_path)``: the metrics rows without their timings and the
    machine's load (what a resumed run must reproduce bit for bit)."""

    def read(path: Path) -> list[dict]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    return read
