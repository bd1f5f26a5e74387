"""How the doctor decides, and the study's measured outcomes it cites (docs/RESULTS.md).

The gradient's state is read from one ratio: the input-side layer's weight-gradient norm over
the output-side layer's, at the model's current weights (docs/DOCTOR.md gives the reasoning):

    < 1e-3 vanishing | 1e-3 .. 1e-1 weak | 1e-1 .. 1e3 healthy | > 1e3 exploding | NaN/Inf

Static verdict (no data): GA when the state is not healthy, GA can change a site, and the
GA-rewritten model (same weights) brings the ratio into [1e-3, 1e3] and at least an order of
magnitude closer to 1; otherwise leave it, with the reason. HD-FGD and SA are never recommended
statically: with copy init HD-FGD computes the same function, and the study found no effect of
either that survives correction on models that train; a trial on the user's data decides.

Trial verdict (with data): the arm that trained clearly better than the baseline
(:func:`netadv.doctor.trial.compare`), else leave it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from netadv.doctor.trial import Arm, compare
from netadv.rewrite.site import RewritePlan

VANISHING, WEAK, EXPLODING = 1e-3, 1e-1, 1e3
#: GA is recommended statically only if it lifts the ratio to at least this (docs/DOCTOR.md).
GA_FLOOR = 1e-4

#: The study's measured outcomes (docs/RESULTS.md), cited where a rule rests on them.
STUDY = {
    "ga_rescues": "study (docs/RESULTS.md s.1, holding after its Holm correction): GA turned "
    "sigmoid MLPs that do not train into ones that do: default init depth 8 19.91% -> 81.09% "
    "Top-1; Glorot init depth 8 19.93% -> 84.61%, depth 16 10.00% -> 73.37% (5 seeds each); "
    "but BatchNorm, DKS, ReZero or residual blocks did as well or better at depth 8 and also "
    "trained depths 16-32, where GA did not (s.2: try those first)",
    "ga_limit": "study: GA could not rescue depth 32 (10% Top-1 with either init) nor sigmoid "
    "depth 16 at default init (19.3%, not significant after correction), where the weights, "
    "not the activation chain, shrink the gradient and GA left the input side 1e-4 or less of "
    "the output side",
    "ga_explodes": "study: with tanh and Glorot init the baseline trains (85% at depth 4, 78% at "
    "32) and GA's A_tanh amplifies: input gradient at init 1.8 (depth 4) to 10 (depth 32) "
    "orders of magnitude above the baseline's, Top-1 down to 69%, 41%, 14%, 10% (depth 8-32 "
    "hold after correction)",
    "ga_healthy": "study: where the baseline trains GA adds little (tanh default init, depth 4: "
    "85.15% -> 85.57%; depth 8: 80.15% -> 85.13%, neither holding after correction) and does "
    "nothing measurable on ViT/Swin",
    "hdfgd_sa": "study: on GELU models that train, no HD-FGD or SA gain holds after the study's "
    "correction (ViT SA +0.9 points, long ViT +1.0, Swin +2.3, uncorrected), and a baseline "
    "widened to the same parameter count does as well or better (long ViT: HD-FGD -1.0, SA -0.6 "
    "points against it; Swin SA -0.3); SA lost 32% BLEU in translation (this holds); they cost "
    "+15% to +55% time per epoch on CPU",
    "relu": "study: on ResNet-18 the ReLU baseline beat every route away from ReLU (SiLU -5.2, "
    "tanh -8.5, sigmoid -40.6 points Top-1), no rewrite beat its like-for-like baseline, and a "
    "SiLU baseline widened to HD-FGD's size beat HD-FGD and SA by 7-9 points",
    "product": "the chain gain product alone does not predict trainability: in the study a "
    "Glorot tanh MLP of depth 32 trains (78% Top-1) with a product of 1e-8",
}


@dataclass
class Recommendation:
    method: str | None  # "ga" | "hdfgd" | "sa" | None (leave it as it is)
    activation: str | None
    plan: str | None  # the plan it would apply, as printed
    reason: str
    evidence: list[str] = field(default_factory=list)
    #: how many leading evidence items restate measurements the printed report shows anyway
    measured: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("measured")
        return d


@dataclass
class Signals:
    """What the rules read: the baseline's gradient, the plans that change sites, the sites."""

    ratio: float | None
    finite: bool
    gain_product: float | None
    plans: dict[str, RewritePlan]  # method -> plan, only methods whose plan changes a site
    activations: list[str]  # of the sites, forward order
    ga_ratio: float | None = None  # the ratio after GA, same weights and inputs
    dead: float | None = None  # mean saturated/dead fraction of ReLU-type sites

    @property
    def state(self) -> str:
        return gradient_state(self.ratio, self.finite)


def gradient_state(ratio: float | None, finite: bool = True) -> str:
    if not finite or (ratio is not None and not math.isfinite(ratio)):
        return "non-finite"
    if ratio is None:
        return "unknown"
    if ratio < VANISHING:
        return "vanishing"
    if ratio < WEAK:
        return "weak"
    return "exploding" if ratio > EXPLODING else "healthy"


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2g}" if 1e-2 <= abs(v) < 1e3 else f"{v:.1e}"


def gradient_sentence(sig: Signals) -> str:
    return (
        f"the input-side layer's weight gradient is {fmt(sig.ratio)} times the output side's "
        f"({sig.state})"
    )


def _activations(sites_or_names: list[str]) -> str:
    return ", ".join(dict.fromkeys(sites_or_names)) or "none"


def recommend(sig: Signals, method: str, reason: str, evidence: list[str]) -> Recommendation:
    p = sig.plans[method]
    changed = _activations([s.activation for s in p.changed()])
    return Recommendation(method, changed, str(p), reason, evidence)


def leave(sig: Signals, reason: str, evidence: list[str]) -> Recommendation:
    return Recommendation(None, _activations(sig.activations), None, reason, evidence)


# ---- static -------------------------------------------------------------------------------------


def ga_lifts(sig: Signals) -> bool:
    """GA brings the ratio into [1e-3, 1e3] and at least 10x closer to 1."""
    r, g = sig.ratio, sig.ga_ratio
    if "ga" not in sig.plans or r is None or g is None or not (r > 0 and g > 0):
        return False
    in_band = GA_FLOOR <= g <= EXPLODING
    return in_band and abs(math.log10(g)) <= abs(math.log10(r)) - 1


def static_verdict(sig: Signals) -> Recommendation:
    state = sig.state
    small = sig.gain_product is not None and sig.gain_product < VANISHING
    evidence = [STUDY["product"]] if small else []
    if state == "non-finite":
        return leave(
            sig,
            "the gradient is not finite at these weights: fix that first (inputs, "
            "init, learning rate); a rewrite is no cure for NaN/Inf",
            evidence,
        )
    if state in ("vanishing", "weak", "exploding") and ga_lifts(sig):
        reason = (
            f"{gradient_sentence(sig)}; alternating f and A_f (GA) brings it to "
            f"{fmt(sig.ga_ratio)} at the same weights"
        )
        if sig.ga_ratio < VANISHING:
            reason += ", still low: only a trial can tell whether that is enough (pass data=)"
        return recommend(sig, "ga", reason, [*evidence, STUDY["ga_rescues"], STUDY["ga_limit"]])
    if state in ("vanishing", "exploding"):
        return leave(sig, _unhealthy_reason(sig), [*evidence, *_unhealthy_evidence(sig)])
    return leave(sig, _healthy_reason(sig), [*evidence, *_healthy_evidence(sig)])


def _unhealthy_reason(sig: Signals) -> str:
    head = gradient_sentence(sig)
    if "ga" in sig.plans:
        return (
            f"{head}, but GA does not fix it: at the same weights it gives "
            f"{fmt(sig.ga_ratio)} ({gradient_state(sig.ga_ratio)}); the weights, not the "
            "activations, set this gradient: try the init (Glorot, orthogonal), normalisation "
            "or residual connections"
        )
    return (
        f"{head}; no netadv rewrite addresses it: GA needs an activation with an adversarial "
        f"and {_activations(sig.activations)} has none, HD-FGD with copy init computes the same "
        "function; try the init, normalisation or residual connections"
    )


def _unhealthy_evidence(sig: Signals) -> list[str]:
    if "ga" not in sig.plans:
        return []
    return [STUDY["ga_explodes"] if (sig.ga_ratio or 0) > EXPLODING else STUDY["ga_limit"]]


def _healthy_reason(sig: Signals) -> str:
    parts = [gradient_sentence(sig)]
    if sig.state == "weak":
        parts[0] += ", not by itself a sign of trouble (small-init embeddings give this too)"
    if "ga" in sig.plans:
        parts.append(f"GA would make it {fmt(sig.ga_ratio)}, and GA helps where gradients die")
    if {"hdfgd", "sa"} & set(sig.plans):
        parts.append(
            "the study found no significant gain from HD-FGD/SA on models that train; only a "
            "trial on your data can say more (pass data=, CLI --config)"
        )
    if not sig.plans:
        dead = f"; {sig.dead:.0%} of its pre-activations are dead (z <= 0)" if sig.dead else ""
        parts.append(
            f"no adversarial exists for {_activations(sig.activations)} and netadv has no "
            f"decomposition of it, so no rewrite applies{dead}"
        )
    return "; ".join(parts)


def _healthy_evidence(sig: Signals) -> list[str]:
    out = []
    if "ga" in sig.plans:
        out += [STUDY["ga_healthy"], STUDY["ga_explodes"]]
    if {"hdfgd", "sa"} & set(sig.plans):
        out.append(STUDY["hdfgd_sa"])
    return out or [STUDY["relu"]]


# ---- with a trial -------------------------------------------------------------------------------

CAVEAT = (
    "a short trial measures the early training loss, not test accuracy: confirm with full runs "
    "over several seeds (netadv sweep --methods baseline,{m})"
)
RULE = "final loss at least 10% below the baseline's and below it on 75% of the last tenth's steps"


def arm_line(arm: Arm, result: dict[str, Any] | None) -> str:
    """One arm of the trial in words."""
    text = f"{arm.name}: loss {fmt(arm.first)} -> {fmt(arm.final)} in {len(arm.losses)} steps"
    if arm.diverged_at is not None:
        text += f", diverged (NaN/Inf) at step {arm.diverged_at}"
    if arm.time_limited:
        text += f", stopped by the time limit after {arm.seconds:.0f} s"
    if arm.input_grad_last is not None:
        text += f", input-side gradient {fmt(arm.input_grad_first)} -> {fmt(arm.input_grad_last)}"
    if result is not None and result["change"] is not None:
        text += f"; final vs baseline {result['change']:+.0%}, lower on "
        text += f"{result['lower_share']:.0%} of the last tenth"
    return text


def trial_verdict(sig: Signals, base: Arm, arms: list[Arm], steps: int) -> Recommendation:
    """The arm that trained clearly better than the baseline (see netadv.doctor.trial), else
    leave it; the evidence lists every arm and the static signals."""
    results = {a.name: compare(base, a, steps) for a in arms}
    evidence = [arm_line(base, None), *(arm_line(a, results[a.name]) for a in arms)]
    evidence.append(gradient_sentence(sig))
    winners = [a for a in arms if results[a.name]["better"]]
    if winners:
        best = min(winners, key=lambda a: results[a.name]["final"])
        r = results[best.name]
        reason = (
            f"in a {r['steps']}-step trial from these weights on the same batches, {best.name}'s "
            f"training loss ended at {fmt(r['final'])} against the baseline's "
            f"{fmt(r['baseline_final'])} ({r['change']:+.0%}), lower on {r['lower_share']:.0%} "
            f"of the last tenth's steps (the rule: {RULE})"
        )
        study = (
            [STUDY["ga_rescues"], STUDY["ga_explodes"]]
            if best.name == "ga"
            else [STUDY["hdfgd_sa"]]
        )
        rec = recommend(sig, best.name, reason, [*evidence, *study, CAVEAT.format(m=best.name)])
    else:
        rec = leave(sig, _no_winner(sig, base, arms, results), [*evidence, *_healthy_evidence(sig)])
    rec.measured = len(arms) + 2
    return rec


def _no_winner(sig: Signals, base: Arm, arms: list[Arm], results: dict) -> str:
    n = max((r["steps"] for r in results.values()), default=0)
    text = f"no rewrite trained clearly better than the baseline in {n} steps ({RULE})"
    finished = [a for a in arms if results[a.name]["change"] is not None]
    if finished:
        close = min(finished, key=lambda a: results[a.name]["change"])
        text += f"; closest: {close.name}, final loss {results[close.name]['change']:+.0%}"
    if base.first and base.final is not None and base.final > 0.98 * base.first:
        text += (
            f"; the baseline itself did not learn ({fmt(base.first)} -> {fmt(base.final)}): "
            "more steps, the learning rate, the init or normalisation may matter more"
        )
    if sig.state != "healthy":
        text += f"; note: {gradient_sentence(sig)}"
    return text
