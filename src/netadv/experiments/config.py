"""One typed config for every run: loaded from YAML, overridden by ``--set key=value``."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from netadv.errors import ConfigError

TASK_NAMES = ("classify", "translate")  # netadv.experiments.tasks.TASKS has them
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "digits", "synthetic")
MODELS = ("mlp", "resnet18", "vit", "swin")
# translation: gettext catalogs installed on the machine, or the user's parallel files
TRANSLATE_DATASETS = ("gettext", "parallel")
TRANSLATE_MODELS = ("transformer",)
DECODINGS = ("greedy", "beam")
LANG_PAIR = re.compile(r"^([a-z]{2,3}(?:_[A-Z]{2})?)-([a-z]{2,3}(?:_[A-Z]{2})?)$")
METHODS = ("baseline", "ga", "hdfgd", "sa")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
STRATEGIES = ("ddp", "fsdp")  # how many processes share the model (docs/SCALING.md)


@dataclass
class RunConfig:
    """Everything one training run depends on (hyperparameters in one visible place)."""

    name: str = "run"
    label: str | None = None  # the arm's name in reports (default: method[-activation])
    task: str = "classify"
    # data
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None  # pad/resize target; None: the dataset's own size
    augment: bool = True
    limit_train: int | None = None  # use the first N training examples (smoke runs)
    limit_test: int | None = None
    num_workers: int = 0
    # model and method
    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    method: str = "baseline"
    activation: str | None = None  # replace every site's activation first (e.g. sigmoid)
    rewrite: dict[str, Any] = field(default_factory=dict)  # period, start, anchor, max_gain...
    # baseline only: widen it to the parameter count of this method's rewrite ("hdfgd", "sa")
    capacity_of: str | None = None
    # fine-tuning: start from the final weights of this run folder (the same base model; "{seed}"
    # in it becomes the run's seed), and evaluate once before training (epoch 0: the accuracy
    # right after the conversion)
    init_from: str | None = None
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    amp: bool = False
    device: str = "auto"  # auto (a CUDA GPU if torch sees one, else CPU), cpu, cuda, cuda:N, mps
    threads: int | None = None  # torch intra-op threads; None: torch's default (see README)
    # with several processes (torchrun): a replica per rank (DDP), or the model sharded (FSDP2)
    strategy: str = "ddp"
    # evaluation and output
    eval_every: int = 1
    target_accuracy: float | None = None
    diagnostics: bool = False
    diagnostics_every: int = 50  # steps
    log_steps: bool = True  # every step's training loss in steps.jsonl (the steadiness measure)
    tensorboard: bool = False  # TensorBoard events in <run folder>/tensorboard (netadv[tracking])
    output_dir: str = "runs"
    # translation (task: translate); model sizes go in model_kwargs
    lang_pair: str = "en-fr"  # source-target; gettext catalogs translate from en
    max_chars: int = 200  # corpus filter: longer sentences (either side) are dropped
    max_len: int = 64  # subword tokens per sentence with BOS/EOS: longer train pairs dropped
    vocab_size: int = 8000  # joint source+target byte-level BPE
    decoding: str = "greedy"
    beam_size: int = 4
    target_bleu: float | None = None  # time to target for translation (BLEU, 0-100)

    @property
    def arm(self) -> str:
        """The label runs are grouped by in reports: ``label``, or the method plus the replaced
        activation."""
        if self.label:
            return self.label
        return self.method if not self.activation else f"{self.method}-{self.activation}"

    @property
    def languages(self) -> tuple[str, str]:
        """(source, target) language codes of ``lang_pair``."""
        match = LANG_PAIR.match(self.lang_pair)
        return match.group(1), match.group(2)

    def validate(self) -> RunConfig:
        if self.task not in TASK_NAMES:
            raise ConfigError(f"task must be one of {', '.join(TASK_NAMES)}, got {self.task!r}")
        translate = self.task == "translate"
        for key, allowed in (
            ("dataset", TRANSLATE_DATASETS if translate else DATASETS),
            ("model", TRANSLATE_MODELS if translate else MODELS),
            ("method", METHODS),
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("decoding", DECODINGS),
            ("strategy", STRATEGIES),
        ):
            if getattr(self, key) not in allowed:
                task = f" for task {self.task}" if key in ("dataset", "model") else ""
                raise ConfigError(
                    f"{key} must be one of {', '.join(allowed)}{task}, got {getattr(self, key)!r}"
                )
        if translate:
            self._validate_translation()
        for key in ("epochs", "batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (null: torch's default), got {self.threads}")
        check_device(self.device)
        self._validate_tracking()
        if self.capacity_of is not None and (
            self.capacity_of not in ("hdfgd", "sa") or self.method != "baseline"
        ):
            raise ConfigError(
                f"capacity_of widens a baseline to the parameters of hdfgd or sa (method "
                f"baseline, capacity_of hdfgd|sa), got method {self.method}, capacity_of "
                f"{self.capacity_of!r}"
            )
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigError(
                f"target_accuracy is a fraction in (0, 1], got {self.target_accuracy}"
            )
        return self

    def _validate_tracking(self) -> None:
        if self.strategy == "fsdp" and self.diagnostics:
            # they read whole layers (weights, gradients) on rank 0; FSDP keeps a shard per rank
            raise ConfigError(
                "diagnostics read whole layers on rank 0, which strategy=fsdp shards over the "
                "ranks: use strategy=ddp for a diagnostics run, or diagnostics=false"
            )
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(
                "tensorboard=true needs the tensorboard package: pip install 'netadv[tracking]' "
                "(or tensorboard==2.21.0), or set tensorboard=false"
            )

    def _validate_translation(self) -> None:
        match = LANG_PAIR.match(self.lang_pair)
        if not match or match.group(1) == match.group(2):
            raise ConfigError(
                f"lang_pair must be SOURCE-TARGET language codes such as en-fr, got "
                f"{self.lang_pair!r}"
            )
        if self.dataset == "gettext" and match.group(1) != "en":
            raise ConfigError(
                f"gettext catalogs translate from English: lang_pair must be en-XX, got "
                f"{self.lang_pair!r} (use dataset=parallel with your own files for other pairs)"
            )
        if self.dataset == "parallel" and not self.data_dir:
            raise ConfigError(
                "dataset=parallel reads your files: set data_dir to a folder holding "
                "train.tsv/test.tsv or train.SRC/train.TGT-style files"
            )
        for key, low in (("max_len", 8), ("max_chars", 1), ("vocab_size", 300), ("beam_size", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{key} must be >= {low}, got {getattr(self, key)}")
        if self.target_bleu is not None and not 0 < self.target_bleu <= 100:
            raise ConfigError(f"target_bleu is a BLEU score in (0, 100], got {self.target_bleu}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def check_device(name: str) -> None:
    """``name`` is a device this machine has (checked when the config is made, not mid-run)."""
    kind, _, index = name.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name} but torch sees no CUDA GPU on this machine: use device=cpu (or auto)"
        )
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={name} but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
            "(cuda:0 is the first)"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name} but torch has no MPS backend here: use device=cpu")


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, _FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; keys: {', '.join(_FIELDS)}")


def _coerce(key: str, value: Any) -> Any:
    """Check a value against the field's annotation, converting YAML scalars where safe."""
    annotation = str(_FIELDS[key].type)
    if value is None:
        if "None" not in annotation:
            raise ConfigError(f"{key} cannot be null")
        return None
    if annotation.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return value
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    for typ in (int, float):
        if annotation.startswith(typ.__name__):
            if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
                try:
                    value = float(value)
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{key} must be a number, got {value!r}")
            if typ is int and float(value) != int(value):
                raise ConfigError(f"{key} must be an integer, got {value!r}")
            return typ(value)
    if annotation.startswith("str") and not isinstance(value, str):
        return str(value)
    return value


def from_dict(data: dict[str, Any]) -> RunConfig:
    values = {}
    for key, value in data.items():
        if key not in _FIELDS:
            raise _unknown_key(key)
        values[key] = _coerce(key, value)
    return RunConfig(**values).validate()


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"lr=3e-4"`` -> (["lr"], 3e-4); ``"rewrite.period=2"`` -> (["rewrite", "period"], 2)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def load(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Config from a YAML file (or the defaults) with ``key=value`` overrides applied."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} not found (see configs/ for examples)")
        if path.is_dir():
            raise ConfigError(
                f"--config {path} is a folder; give a YAML file, e.g. --config configs/smoke.yaml"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or "not a text file"
            raise ConfigError(f"cannot read config file {path}: {why}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys")
    return from_dict(apply_overrides(data, overrides))


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``key=value`` / ``a.b=value`` overrides to a config mapping (in place)."""
    for text in overrides:
        keys, value = parse_override(text)
        _set(data, keys, value, text)
    return data


def _set(data: dict[str, Any], keys: list[str], value: Any, text: str) -> None:
    target = data
    for k in keys[:-1]:
        target = target.setdefault(k, {})
        if not isinstance(target, dict):
            raise ConfigError(f"cannot set {text!r}: {k} is not a mapping")
    target[keys[-1]] = value


def as_config(config: RunConfig | Mapping[str, Any] | str | os.PathLike, **overrides) -> RunConfig:
    """A validated RunConfig from a RunConfig, a mapping of config keys or a YAML file's path,
    with ``overrides`` applied as ``--set`` applies them: ``lr=3e-4``; a mapping replaces a
    mapping key (``rewrite={"period": 2}``); a dotted key sets one entry in it
    (``**{"rewrite.period": 2}``)."""
    if isinstance(config, RunConfig):
        data = config.to_dict()
    elif isinstance(config, Mapping):
        data = dict(config)
    elif isinstance(config, str | os.PathLike):
        data = load(config).to_dict()
    else:
        raise ConfigError(
            "the config must be a RunConfig, a mapping of config keys or a YAML file's path, "
            f"got {type(config).__name__}"
        )
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        _set(data, key.split("."), copy.deepcopy(value), f"{key}={value!r}")
    return from_dict(data)


def with_overrides(cfg: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied."""
    return from_dict(apply_overrides(copy.deepcopy(cfg.to_dict()), overrides))


UNSET = "(unset)"


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple]:
    """The keys whose values differ between two config mappings, nested keys by dotted name
    (``rewrite.period``): {key: (old value, new value)}, a missing key as ``UNSET``. Values
    are compared as YAML writes and reads them back (a tuple equals a list)."""
    old, new = _as_yaml(old), _as_yaml(new)
    out: dict[str, tuple] = {}
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key, UNSET), new.get(key, UNSET)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = (a, b)
    return out


def _as_yaml(data: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(data)) or {}
