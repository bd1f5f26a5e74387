"""``make demo``: two small comparisons on Fashion-MNIST, each ending in a report.

1. A small ViT (timm), its native GELU vs HD-FGD vs SA (configs/demo_vit.yaml).
2. A 12-layer sigmoid MLP, baseline vs GA (configs/demo_mlp.yaml): the setting where the
   vanishing gradient the method targets is plain to see in the per-layer gradient norms.
Runs that already finished are not repeated, so a second ``make demo`` only prints the reports.
"""

from __future__ import annotations

import json
from pathlib import Path

from netadv.experiments import config as config_mod
from netadv.experiments.report import compare, format_table, load_run, report_table
from netadv.experiments.run_folder import DIAGNOSTICS_FILE
from netadv.experiments.sweep import sweep

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PARTS = (("demo_vit.yaml", ["baseline", "hdfgd", "sa"]), ("demo_mlp.yaml", ["baseline", "ga"]))


def _grad_norms_by_depth(runs: list[Path]) -> str:
    """Per-layer weight-gradient norm, averaged over the run's diagnostics rows."""
    lines, table = [], {}
    for run in runs:
        rows = [json.loads(x) for x in (run / DIAGNOSTICS_FILE).read_text().splitlines()]
        layers = list(rows[0]["grad_norms"])
        table[load_run(run).arm] = {
            n: sum(r["grad_norms"][n] for r in rows) / len(rows) for n in layers
        }
    arms = list(table)
    lines.append("layer  " + "".join(f"{a:>14}" for a in arms))
    for n in table[arms[0]]:
        lines.append(f"{n:<7}" + "".join(f"{table[a][n]:>14.3e}" for a in arms))
    return "\n".join(lines)


def run(
    data_dir: str | None = None,
    output_dir: str | None = None,
    quiet: bool = False,
    overrides: list[str] = (),
) -> list[Path]:
    reports = []
    for config_name, methods in PARTS:
        extra = [
            *overrides,
            *([f"data_dir={data_dir}"] if data_dir else []),
            *([f"output_dir={output_dir}/{Path(config_name).stem}"] if output_dir else []),
        ]
        cfg = config_mod.load(CONFIGS / config_name, extra)
        print(f"\n== {config_name}: {', '.join(methods)} ==")
        runs = sweep(cfg, methods, [cfg.seed], resume=True, quiet=quiet)
        report = compare(runs, Path(cfg.output_dir))
        reports.append(report)
        print(f"\nreport: {report}")
        print(format_table(report_table([load_run(r) for r in runs])))
        if cfg.model == "mlp":
            print("\nmean weight-gradient norm by layer (input side first):")
            print(_grad_norms_by_depth(runs))
    return reports
