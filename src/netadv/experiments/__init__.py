"""Experiments: data, models, the training loop, reports.

Training from a script::

    from netadv.experiments import fit

    summary = fit("configs/smoke.yaml", epochs=2, name="smoke-2")
    print(summary["final_top1"])
"""

from netadv.experiments.api import fit
from netadv.experiments.config import RunConfig, as_config
from netadv.experiments.config import load as load_config
from netadv.experiments.loop import TrainingDiverged

__all__ = ["RunConfig", "TrainingDiverged", "as_config", "fit", "load_config"]
