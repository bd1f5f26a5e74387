"""Save a rewritten model as weights plus the recipe that rebuilds it; load it onto a fresh base.

``netadv.save(model, folder)`` writes two files into ``folder``:

- ``netadv.safetensors``: the rewritten model's weights (safetensors: no code runs on load);
- ``netadv.json``: the recipe: the rewrite call (method, activation by name, options, the
  example inputs' shapes and dtypes), the sites it gave, the parameter counts, and the netadv
  and torch versions.

``netadv.load(folder, base_model)`` plans the same rewrite on ``base_model`` (a freshly built
model of the original architecture), refuses in one line when the sites differ from the
recipe's, rewrites it, and loads the weights. The files sit beside a HuggingFace
``save_pretrained`` folder without touching its own (see docs/REWRITE.md).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from netadv.activations.registry import resolve
from netadv.errors import ConfigError
from netadv.rewrite.apply import rewrite
from netadv.rewrite.plan import RECIPE, plan
from netadv.rewrite.site import RECIPE_FIELDS
from netadv.rewrite.trace import make_inputs

WEIGHTS_FILE = "netadv.safetensors"
RECIPE_FILE = "netadv.json"
FORMAT = 1


def save(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model`` (made by :func:`netadv.rewrite`) into ``folder``: its weights and the
    recipe that rebuilds it. Returns the folder."""
    recipe = model.__dict__.get(RECIPE)
    if recipe is None:
        raise ConfigError(
            "this model was not made by netadv.rewrite, so there is no recipe to save: save "
            "its state_dict with torch.save, or rewrite the model with netadv.rewrite first"
        )
    _check_nameable(recipe)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, **recipe, "versions": _versions()}
    tmp = folder / (RECIPE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    save_model(model, str(folder / WEIGHTS_FILE))  # ties and shared tensors handled
    tmp.replace(folder / RECIPE_FILE)  # the recipe last: a folder with one is complete
    return folder


def load(folder: str | Path, base_model: nn.Module, *, strict: bool = True) -> nn.Module:
    """``base_model`` rewritten by the recipe in ``folder`` and given the saved weights (the
    base model is rewritten in place and returned)."""
    folder = Path(folder)
    recipe = _read_recipe(folder)
    options = {k: v for k, v in recipe["options"].items() if v is not None}
    kept = plan(
        base_model,
        recipe["method"],
        activation=recipe["activation"],
        example_inputs=make_inputs(recipe["inputs"]),
        **options,
    )
    _check_same_sites(recipe, kept.recipe())
    model = rewrite(base_model, kept, inplace=True)
    try:
        load_model(model, str(folder / WEIGHTS_FILE), strict=strict)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise ConfigError(
            f"cannot load {folder / WEIGHTS_FILE} into the rebuilt model "
            f"({_first_line(e)}); save the model again"
        ) from None
    return model


def _versions() -> dict[str, str]:
    return {"netadv": metadata.version("netadv"), "torch": torch.__version__}


def _check_nameable(recipe: dict[str, Any]) -> None:
    title = recipe["activation"]
    if title is None:
        return
    try:
        resolve(title)
    except (ValueError, TypeError):
        raise ConfigError(
            f"the rewrite replaced activations by {title!r}, which is not a registered name, so "
            "a recipe cannot name it: register it with netadv.register_activation(name, f) and "
            "rewrite with activation=name"
        ) from None


def _read_recipe(folder: Path) -> dict[str, Any]:
    path = folder / RECIPE_FILE
    if not path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(
            f"{folder} holds no model saved by netadv.save (it needs {RECIPE_FILE} and "
            f"{WEIGHTS_FILE})"
        )
    try:
        recipe = json.loads(path.read_text())
        assert isinstance(recipe, dict) and recipe.get("format") == FORMAT
    except (ValueError, AssertionError):
        raise ConfigError(f"{path} is not a netadv recipe (format {FORMAT}): save again") from None
    return recipe


def _check_same_sites(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """One line naming the first site where the base model's plan differs from the recipe."""
    a, b = saved["sites"], now["sites"]
    if len(a) != len(b):
        raise ConfigError(
            f"the base model does not match the recipe: it has {len(b)} activation sites, the "
            f"saved model had {len(a)}; build the base model with the saved model's architecture"
        )
    for x, y in zip(a, b):
        for key in RECIPE_FIELDS:
            if x.get(key) != y.get(key):
                raise ConfigError(
                    f"the base model does not match the recipe: site {x['index']} "
                    f"({x['name']}) has {key} {y.get(key)!r} here, {x.get(key)!r} in the "
                    "recipe; build the base model with the saved model's architecture"
                )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
