"""``netadv doctor``: where a model's gradients die, and which rewrite to try (docs/DOCTOR.md).

The model comes from ``--model SPEC`` (as in ``netadv plan``) or from a harness config; the
config's dataset feeds the trial. User errors raise ConfigError (one line).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader

from netadv.cli.options import add_set_argument
from netadv.cli.plan import SPEC_HELP, build_model, parse_kwargs, parse_shape
from netadv.doctor import METHODS, doctor
from netadv.doctor.trial import LR, STEPS, TIME_LIMIT
from netadv.errors import ConfigError
from netadv.experiments import config as config_mod
from netadv.experiments.config import RunConfig
from netadv.experiments.data import image_datasets
from netadv.experiments.models import build_model as build_harness_model

HELP = "diagnose where a model's gradients die and which rewrite to try"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--model", default=None, metavar="SPEC", help=f"{SPEC_HELP} (default: the config's)"
    )
    parser.add_argument(
        "--model-kwargs", default="", metavar="K=V,...", help="keyword arguments of the factory"
    )
    parser.add_argument(
        "--input-shape", default=None, metavar="N,C,H,W", help="measure on a random input"
    )
    parser.add_argument(
        "--config", default=None, help="a harness config: its dataset (and model) for the trial"
    )
    add_set_argument(parser, "override a config key (repeatable: model_kwargs.depth=16)")
    parser.add_argument("--steps", type=int, default=STEPS, help="trial steps per arm")
    parser.add_argument(
        "--methods", default=None, metavar="M,...", help=f"consider only these of {METHODS}"
    )
    parser.add_argument("--lr", type=float, default=None, help=f"trial AdamW lr (default {LR})")
    parser.add_argument(
        "--time-limit", type=float, default=TIME_LIMIT, help="seconds per trial arm"
    )
    parser.add_argument("--seed", type=int, default=None, help="model init seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    parser.add_argument("-o", "--output", default=None, metavar="DIR", help="write report.md, PNGs")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.model is None and args.config is None:
        raise ConfigError("give --model SPEC (and --input-shape) or --config CFG")
    cfg = config_mod.load(args.config, args.set) if args.config else None
    seed = args.seed if args.seed is not None else cfg.seed if cfg else 0
    torch.manual_seed(seed)
    data, model = (None, None) if cfg is None else config_data(cfg, args.model is None)
    if args.model is not None:
        model = build_model(args.model, parse_kwargs(args.model_kwargs))
    example = (torch.randn(parse_shape(args.input_shape)),) if args.input_shape else None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    diagnosis = doctor(
        model,
        example_inputs=example,
        data=data,
        steps=args.steps,
        methods=methods,
        lr=args.lr or _config_lr(cfg),
        time_limit=args.time_limit,
        quiet=args.quiet,
        seed=seed,
    )
    if args.output:
        paths = diagnosis.save(args.output)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    print(json.dumps(diagnosis.to_dict(), indent=2) if args.json else diagnosis)
    return 0


def _config_lr(cfg: RunConfig | None) -> float:
    """The config's lr when it is tuned for AdamW (the trial's optimizer), else the default."""
    return cfg.lr if cfg is not None and cfg.optimizer == "adamw" else LR


def config_data(cfg: RunConfig, with_model: bool) -> tuple[DataLoader, nn.Module | None]:
    """A harness config's training data as a shuffled loader (no augmentation: the trial
    compares training losses) and, if asked, its model."""
    if cfg.task != "classify":
        raise ConfigError(f"netadv doctor --config takes classification configs, not {cfg.task}")
    images = image_datasets(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download,
        image_size=cfg.image_size,
        augment=False,
        limit_train=cfg.limit_train,
    )
    loader = DataLoader(
        images.train,
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if not with_model:
        return loader, None
    if cfg.activation:
        print(
            f"netadv doctor: the config's activation={cfg.activation} (a replace rewrite) is not "
            "applied: the doctor diagnoses the model as its constructor builds it",
            file=sys.stderr,
        )
    model = build_harness_model(
        cfg.model,
        in_chans=images.in_chans,
        num_classes=images.num_classes,
        image_size=images.image_size,
        **cfg.model_kwargs,
    )
    return loader, model


def main(argv: list[str]) -> int:
    """``netadv doctor`` on its own (``argv`` without the subcommand)."""
    parser = argparse.ArgumentParser(prog="netadv doctor", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
