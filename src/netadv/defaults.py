"""The method's documented defaults (METHOD.md), in one place.

Every function and module that takes one of these options uses the constant here as its
default, so changing a default is a one-line change.
"""

from __future__ import annotations

#: The largest gain ``1/|f'(x)|`` an adversarial uses; beyond it A_f continues linearly.
MAX_GAIN = 25.0
#: ``"f0"``: ``A_f(0) = f(0)``; ``"zero"``: ``A_f(0) = 0``.
ANCHORS = ("f0", "zero")
ANCHOR = "f0"
#: ``"copy"``: every HD-FGD term starts as the original layer; ``"fresh"``: drawn anew.
INITS = ("copy", "fresh")
INIT = "copy"
#: Weight of SA's L2 penalty on its adversarial terms (0 disables it).
PENALTY_WEIGHT = 1e-4
