"""netadv: network adversarial activations and HD-FGD (arXiv 2405.03712) for PyTorch."""

from netadv import functional
from netadv.activations.catalog import list_activations, register_activation
from netadv.activations.kernel import stable_interval
from netadv.decompose import Decomposition, decompose
from netadv.doctor import Diagnosis, doctor
from netadv.errors import ConfigError, NoAdversarialError
from netadv.fused import get_backend, set_backend
from netadv.layers.adversarial import Adversarial, adversarial
from netadv.layers.hdfgd import HDFGD, hdfgd, penalty
from netadv.rewrite import RewritePlan, plan, rewrite
from netadv.saving import load, save

__all__ = [
    "HDFGD",
    "Adversarial",
    "ConfigError",
    "Decomposition",
    "Diagnosis",
    "NoAdversarialError",
    "RewritePlan",
    "adversarial",
    "decompose",
    "doctor",
    "functional",
    "get_backend",
    "hdfgd",
    "list_activations",
    "load",
    "penalty",
    "plan",
    "register_activation",
    "rewrite",
    "save",
    "set_backend",
    "stable_interval",
]
__version__ = "0.1.0"
