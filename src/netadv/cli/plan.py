"""``netadv plan``: print the rewrite plan of a model named on the command line.

User errors raise ConfigError (one line).
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

import torch
from torch import nn

from netadv.errors import ConfigError
from netadv.rewrite import METHODS, plan
from netadv.rewrite.plan import STARTS

HELP = "print the rewrite plan of a torchvision/timm/own model"
SPEC_HELP = "torchvision:NAME, timm:NAME or module.path:factory"


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_kwargs(text: str | None, what: str = "--model-kwargs") -> dict[str, Any]:
    """``"img_size=32,patch_size=4"`` -> ``{"img_size": 32, "patch_size": 4}``."""
    out: dict[str, Any] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} takes key=value pairs separated by commas, got {item!r}")
        out[key.strip()] = _value(value.strip())
    return out


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise ConfigError(f"--input-shape takes positive integers like 1,3,32,32, got {text!r}")
    return shape


def build_model(spec: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A model from ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory``, with random
    weights (nothing is downloaded)."""
    kwargs = dict(kwargs or {})
    source, sep, name = spec.partition(":")
    if not sep or not source or not name:
        raise ConfigError(f"--model must be {SPEC_HELP}, got {spec!r}")
    try:
        if source == "torchvision":
            import torchvision

            try:
                model = torchvision.models.get_model(name, weights=None, **kwargs)
            except ValueError as e:
                raise ConfigError(f"torchvision has no model {name!r} ({e})") from None
        elif source == "timm":
            import timm

            if not timm.is_model(name):
                raise ConfigError(f"timm has no model {name!r} (see timm.list_models())")
            model = timm.create_model(name, pretrained=False, **kwargs)
        else:
            try:
                module = importlib.import_module(source)
            except ImportError as e:
                raise ConfigError(f"cannot import {source!r} for --model {spec!r}: {e}") from None
            factory = getattr(module, name, None)
            if factory is None or not callable(factory):
                raise ConfigError(f"{source} has no callable {name!r} (--model {spec!r})")
            model = factory(**kwargs)
    except TypeError as e:  # a keyword the factory does not take
        raise ConfigError(f"cannot build {spec} with {kwargs}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, metavar="SPEC", help=SPEC_HELP)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument(
        "--activation", default=None, help="replace every site by this activation first"
    )
    parser.add_argument(
        "--input-shape",
        default=None,
        metavar="N,C,H,W",
        help="run the model on a random input of this shape to find the sites (recommended)",
    )
    parser.add_argument(
        "--model-kwargs", default="", metavar="K=V,...", help="keyword arguments of the factory"
    )
    parser.add_argument(
        "--layer-options",
        default="",
        metavar="K=V,...",
        help="anchor, max_gain, init, match_params, penalty_weight (by method)",
    )
    parser.add_argument("--period", type=int, default=1)
    parser.add_argument("--start", choices=STARTS, default="f")
    parser.add_argument("--include", action="append", metavar="GLOB", help="repeatable")
    parser.add_argument("--exclude", action="append", metavar="GLOB", help="repeatable")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    model = build_model(args.model, parse_kwargs(args.model_kwargs))
    example = None
    if args.input_shape:
        example = (torch.randn(parse_shape(args.input_shape)),)
    p = plan(
        model,
        args.method,
        activation=args.activation,
        example_inputs=example,
        period=args.period,
        start=args.start,
        include=args.include,
        exclude=args.exclude,
        **parse_kwargs(args.layer_options, "--layer-options"),
    )
    print(json.dumps(p.to_dict(), indent=2) if args.json else p)
    return 0


def main(argv: list[str]) -> int:
    """``netadv plan`` on its own (``argv`` without the subcommand)."""
    parser = argparse.ArgumentParser(
        prog="netadv plan", description="Print the rewrite plan of a model."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
