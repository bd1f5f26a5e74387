"""The doctor against the study: run ``netadv doctor`` (GA considered, a trial on Fashion-MNIST)
on every config of the gradient study and put its verdict beside the study's measured outcome.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/doctor_agreement.py [--steps 300]

Prints the markdown table of docs/DOCTOR.md ("Agreement with the study"). The doctor runs on
configs/study_mlp.yaml with the study's overrides (depth 4/8/16/32 x sigmoid/tanh x default /
Glorot init), seed 0, the config's batch size (128) and AdamW lr (1e-3); the study's outcome is
read from the committed run records (docs/results/records: 3 or 5 seeds per arm, final Top-1,
the study's paired t-test over the shared seeds at p < 0.05, uncorrected), so no study run is
needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from netadv.cli.doctor import config_data
from netadv.doctor import doctor
from netadv.experiments import config as config_mod
from netadv.experiments.report.runs import find_run_dirs, load_run
from netadv.experiments.report.significance import paired, paired_t_p

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [
    (init, act, depth)
    for init in ("default", "xavier")
    for act in ("sigmoid", "tanh")
    for depth in (4, 8, 16, 32)
]


def study_outcome(records: Path, name: str) -> tuple[str, str]:
    """('GA better' | 'GA worse' | 'n.s., GA ahead' | 'n.s.', 'base% -> ga% (p)')."""
    top1: dict[str, dict] = {}
    for path in find_run_dirs([records / name]):
        run = load_run(path)
        top1.setdefault(run.arm, {})[run.seed] = 100 * run.summary["final_top1"]
    base, ga = paired(top1["baseline"], top1["ga"])
    mb, mg, p = sum(base) / len(base), sum(ga) / len(ga), paired_t_p(ga, base)
    text = f"{mb:.1f}% -> {mg:.1f}%" + (f" (p = {p:.2g})" if p is not None else " (no spread)")
    if p is not None and p < 0.05:
        return ("GA better" if mg > mb else "GA worse"), text
    return ("n.s., GA ahead" if mg > mb + 1 else "n.s."), text


def agrees(verdict: str | None, outcome: str) -> str:
    """GA agrees with a significant GA gain, "leave it" with anything else; GA beside a
    non-significant lead of GA agrees in direction only."""
    if verdict == "ga":
        return {"GA better": "yes", "n.s., GA ahead": "direction"}.get(outcome, "no")
    return "no" if outcome == "GA better" else "yes"


def diagnose(init: str, act: str, depth: int, steps: int, seed: int):
    sets = [f"model_kwargs.depth={depth}", f"model_kwargs.activation={act}", f"seed={seed}"]
    if init != "default":
        sets.append(f"model_kwargs.init={init}")
    cfg = config_mod.load(ROOT / "configs" / "study_mlp.yaml", sets)
    torch.manual_seed(cfg.seed)
    data, model = config_data(cfg, True)
    return doctor(model, data=data, steps=steps, methods=["ga"], lr=cfg.lr, seed=seed, quiet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records", default=str(ROOT / "docs" / "results" / "records"))
    parser.add_argument("--json-dir", default=None, help="also write each diagnosis.json here")
    args = parser.parse_args(argv)
    head = ("config", "grad ratio", "static", "agree", "trial loss: baseline -> GA",
            "with trial", "agree", "study: baseline -> GA Top-1", "study")  # fmt: skip
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    start, agree, agree_static = time.perf_counter(), 0, 0
    for init, act, depth in CONFIGS:
        name = f"gradient-mlp-{'xavier-' if init == 'xavier' else ''}{act}-d{depth}"
        d = diagnose(init, act, depth, args.steps, args.seed)
        out = d.to_dict()
        if args.json_dir:
            Path(args.json_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.json_dir) / f"{name}.json").write_text(json.dumps(out, indent=2))
        outcome, numbers = study_outcome(Path(args.records), name)
        base, ga = out["trial"]["arms"]
        trial = f"{base['final_loss']:.3g} -> {ga['final_loss']:.3g}" if ga["final_loss"] else "-"
        ok, ok_static = agrees(d.method, outcome), agrees(d.static_recommendation.method, outcome)
        agree, agree_static = agree + (ok == "yes"), agree_static + (ok_static == "yes")
        row = (name.removeprefix("gradient-mlp-"), f"{out['gradient']['ratio']:.1e}",
               d.static_recommendation.method or "leave it", ok_static, trial,
               d.method or "leave it", ok, numbers, outcome)  # fmt: skip
        print("| " + " | ".join(row) + " |", flush=True)
    took = time.perf_counter() - start
    n = len(CONFIGS)
    print(
        f"\nagree: {agree_static} of {n} static, {agree} of {n} with the trial; {took:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
