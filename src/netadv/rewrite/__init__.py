"""Model surgery: find the activation sites of any PyTorch model, plan, then apply.

``plan(model, method, ...)`` returns a :class:`RewritePlan` (print it to see every site and what
it becomes); ``rewrite(model, method, ...)`` applies exactly that plan. See docs/REWRITE.md.
"""

from netadv.rewrite.apply import rewrite
from netadv.rewrite.ecosystem import register_unmodelled_activation
from netadv.rewrite.modules import Activation, Folded
from netadv.rewrite.plan import plan
from netadv.rewrite.site import METHODS, RewritePlan, Site

__all__ = [
    "METHODS",
    "Activation",
    "Folded",
    "RewritePlan",
    "Site",
    "plan",
    "register_unmodelled_activation",
    "rewrite",
]
