"""``make demo``: two small comparisons on Fashion-MNIST, each ending in a report.

1. A small ViT (timm), its native GELU vs HD-FGD vs SA (configs/demo_vit.yaml), one seed.
2. An 8-layer sigmoid MLP with Glorot init, baseline vs GA (configs/demo_mlp.yaml), three
   seeds: the setting where the vanishing gradient the method targets is plain to see in the
   per-layer gradient norms, chosen away from the edge of chaos (at depth 12 and more the same
   seed gives very different accuracies on different CPUs), so a newcomer reproduces it.
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
#: (config, methods, seeds)
PARTS = (
    ("demo_vit.yaml", ["baseline", "hdfgd", "sa"], [0]),
    ("demo_mlp.yaml", ["baseline", "ga"], [0, 1, 2]),
)


def _grad_norms_by_depth(runs: list[Path]) -> str:
    """Per-layer weight-gradient norm, averaged over each arm's runs and their diagnostics
    rows."""
    sums: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        rows = [json.loads(x) for x in (run / DIAGNOSTICS_FILE).read_text().splitlines()]
        arm = sums.setdefault(load_run(run).arm, {})
        for n in rows[0]["grad_norms"]:
            arm.setdefault(n, []).append(sum(r["grad_norms"][n] for r in rows) / len(rows))
    arms = list(sums)
    lines = ["layer  " + "".join(f"{a:>14}" for a in arms)]
    for n in sums[arms[0]]:
        means = [sum(sums[a][n]) / len(sums[a][n]) for a in arms]
        lines.append(f"{n:<7}" + "".join(f"{m:>14.3e}" for m in means))
    return "\n".join(lines)


def run(
    data_dir: str | None = None,
    output_dir: str | None = None,
    quiet: bool = False,
    overrides: list[str] = (),
) -> list[Path]:
    reports = []
    for config_name, methods, seeds in PARTS:
        extra = [
            *overrides,
            *([f"data_dir={data_dir}"] if data_dir else []),
            *([f"output_dir={output_dir}/{Path(config_name).stem}"] if output_dir else []),
        ]
        cfg = config_mod.load(CONFIGS / config_name, extra)
        print(f"\n== {config_name}: {', '.join(methods)} x seeds {seeds} ==")
        runs = sweep(cfg, methods, seeds, resume=True, quiet=quiet)
        report = compare(runs, Path(cfg.output_dir))
        reports.append(report)
        print(f"\nreport: {report}")
        print(format_table(report_table([load_run(r) for r in runs])))
        if cfg.model == "mlp":
            print("\nmean weight-gradient norm by layer (input side first):")
            print(_grad_norms_by_depth(runs))
    return reports
