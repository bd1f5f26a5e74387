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
#: ``True``: an HD-FGD/SA block shrinks its hidden width to keep the parameter count (needs
#: ``init="fresh"``).
MATCH_PARAMS = False
#: The GA/SA alternation over sites: blocks of ``PERIOD`` sites alternate ``f, A_f, ...``
#: (``START = "f"``) or ``A_f, f, ...`` (``"A"``); for SA read HD-FGD for f and SA for A_f.
PERIOD = 1
STARTS = ("f", "A")
START = "f"
