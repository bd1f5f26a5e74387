"""The doctor's answer: :class:`Diagnosis`, printable as a short report and JSON-able."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netadv.doctor.files import write_report
from netadv.doctor.measure import Measurement
from netadv.doctor.trial import Arm, compare
from netadv.doctor.verdict import Recommendation, Signals, fmt

#: Sites printed in full up to this many; beyond, the first and last half of it.
MAX_ROWS = 24
WIDTH = 100


@dataclass
class Trial:
    steps: int  # asked per arm
    lr: float
    time_limit: float
    arms: list[Arm]  # the baseline first

    def to_dict(self) -> dict[str, Any]:
        base = self.arms[0]
        arms = []
        for a in self.arms:
            row = a.to_dict()
            if a is not base:
                row["vs_baseline"] = compare(base, a, self.steps)
            arms.append(row)
        return {"steps": self.steps, "lr": self.lr, "time_limit": self.time_limit, "arms": arms}


@dataclass
class Diagnosis:
    """What :func:`netadv.doctor` found: ``print(d)`` for the report, ``d.to_dict()`` for data."""

    model: str
    parameters: int
    inputs: str
    discovery: str
    before: Measurement
    signals: Signals
    recommendation: Recommendation
    static_recommendation: Recommendation
    trial: Trial | None = None
    after: Measurement | None = None  # the recommended rewrite, same weights and inputs
    notes: list[str] = field(default_factory=list)
    data_given: bool = False  # data was passed (a trial runs unless no rewrite applies)

    @property
    def method(self) -> str | None:
        return self.recommendation.method

    @property
    def static(self) -> bool:
        return self.trial is None

    def trial_would_add(self) -> str | None:
        if self.data_given:
            return None
        methods = ", ".join(self.signals.plans) or "no rewrite (none applies)"
        return (
            "static diagnosis (no data): a trial with data (data=, CLI --config) would train the "
            f"baseline and {methods} for a few hundred steps from these weights on the same "
            "batches and base the verdict on the measured loss decrease and gradient flow"
        )

    def to_dict(self) -> dict[str, Any]:
        m, sig = self.before, self.signals
        norms = [r["norm"] for r in m.layers]
        out = {
            "model": self.model,
            "parameters": self.parameters,
            "inputs": self.inputs,
            "discovery": self.discovery,
            "mode": "static" if self.static else "trial",
            "sites": m.sites,
            "gradient_norms": m.layers,
            "gradient": {
                "loss": m.loss,
                "input_side": norms[0] if norms else None,
                "output_side": norms[-1] if norms else None,
                "ratio": sig.ratio,
                "state": sig.state,
                "gain_product": m.gain_product,
                "ratio_after_ga": sig.ga_ratio,
            },
            "recommendation": self.recommendation.to_dict(),
            "static_recommendation": self.static_recommendation.to_dict(),
            "trial": self.trial.to_dict() if self.trial else None,
            "trial_would_add": self.trial_would_add(),
            "after": self._after(),
            "notes": list(self.notes),
        }
        return jsonable(out)

    def _after(self) -> dict[str, Any] | None:
        if self.after is None:
            return None
        return {
            "method": self.method,
            "sites": [{"name": r["name"], "gain": r["gain"]} for r in self.after.sites],
            "gradient_norms": self.after.layers,
            "ratio": self.after.ratio,
            "gain_product": self.after.gain_product,
        }

    def save(self, directory: str | Path) -> list[Path]:
        """Write report.md, diagnosis.json and the PNG plots into ``directory``."""
        return write_report(self.to_dict(), str(self), directory)

    def __str__(self) -> str:
        return "\n".join(self._lines())

    __repr__ = __str__

    def _lines(self) -> list[str]:
        m, sig = self.before, self.signals
        lines = [
            f"netadv doctor: {self.model}, {len(m.sites)} activation sites, "
            f"{self.parameters:,} parameters",
            f"inputs: {self.inputs}; sites found by {self.discovery}",
            _gradient_line(m, sig),
            f"chain gain product over the sites: {fmt(m.gain_product)}",
            "",
            *_site_table(m.sites),
        ]
        if self.trial is not None:
            lines += ["", *_trial_table(self.trial)]
        lines += ["", *_recommendation_lines(self.recommendation)]
        if self.trial_would_add():
            lines += _wrap(self.trial_would_add(), "")
        elif self.static_recommendation.method != self.method:
            alone = self.static_recommendation.method or "leave it"
            lines += _wrap(f"(static signals alone: {alone})", "")
        lines += [line for n in self.notes for line in _wrap(f"note: {n}", "")]
        return lines


def _gradient_line(m: Measurement, sig: Signals) -> str:
    if len(m.layers) < 2:
        return f"gradients ({m.loss}): fewer than two weight layers, no ratio"
    first, last = m.layers[0], m.layers[-1]
    return (
        f"gradients ({m.loss}): input side {first['layer']} ({first['type']}) "
        f"{fmt(first['norm'])}, output side {last['layer']} ({last['type']}) "
        f"{fmt(last['norm'])}; ratio {fmt(sig.ratio)}: {sig.state.upper()}"
    )


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _site_row(r: dict[str, Any]) -> tuple[str, ...]:
    if r.get("gain") is None:
        return (str(r["index"]), r["name"], r["activation"], "-", "-", "-", "-", r.get("note", ""))
    interval = r.get("interval")
    iv = "-" if interval is None else f"[{interval[0]:.3g}, {interval[1]:.3g}]"
    return (
        str(r["index"]),
        r["name"],
        r["activation"],
        f"{r['gain']:.3g}",
        _pct(r["saturated"]),
        f"{r['p01']:.3g} .. {r['p99']:.3g}",
        iv,
        _pct(r.get("outside")),
    )


def _site_table(sites: list[dict[str, Any]]) -> list[str]:
    head = (
        "#",
        "site",
        "activation",
        "gain",
        "saturated",
        "z p1 .. p99",
        "stable interval",
        "outside",
    )
    rows = [_site_row(r) for r in sites]
    hidden = 0
    if len(rows) > MAX_ROWS:
        hidden = len(rows) - MAX_ROWS
        rows = rows[: MAX_ROWS // 2] + [("...",) + ("",) * 7] + rows[-MAX_ROWS // 2 :]
    lines = table([head, *rows])
    if hidden:
        lines.append(f"({hidden} sites not shown; all are in to_dict()['sites'])")
    lines.append("saturated: |phi'(z)| < 10% of phi's largest slope (ReLU: z <= 0, dead)")
    return lines


def _trial_table(trial: Trial) -> list[str]:
    base = trial.arms[0]
    rows = [("arm", "params", "loss first -> final", "vs baseline", "input grad", "steps", "s")]
    for a in trial.arms:
        c = compare(base, a, trial.steps) if a is not base else None
        vs = "-" if c is None or c["change"] is None else f"{c['change']:+.0%}"
        end = "diverged" if a.diverged_at is not None else str(len(a.losses))
        rows.append(
            (
                a.name,
                f"{a.params:,}",
                f"{fmt(a.first)} -> {fmt(a.final)}",
                vs,
                f"{fmt(a.input_grad_first)} -> {fmt(a.input_grad_last)}",
                end,
                f"{a.seconds:.1f}",
            )
        )
    title = (
        f"trial: up to {trial.steps} steps per arm (AdamW lr {trial.lr:g}, {trial.time_limit:g} s "
        "limit), same weights and batches; loss = mean of the first / last tenth"
    )
    return [title, *table(rows)]


def _recommendation_lines(rec: Recommendation) -> list[str]:
    if rec.method is None:
        lines = ["recommendation: leave it as it is"]
    else:
        lines = [f"recommendation: {rec.method.upper()} ({rec.activation})"]
        summary = rec.plan.splitlines()[-1] if rec.plan else ""
        lines += _wrap(f'apply: netadv.rewrite(model, "{rec.method}", ...): {summary}', "  ")
    lines += _wrap(f"reason: {rec.reason}", "  ")
    for e in rec.evidence[rec.measured :]:
        lines += _wrap(f"- {e}", "  ", "    ")
    return lines


def _wrap(text: str | None, indent: str, rest: str | None = None) -> list[str]:
    if not text:
        return []
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=rest or indent)


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned columns (two spaces apart)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def jsonable(v: Any) -> Any:
    """``v`` with NaN/Inf floats as the strings "nan", "inf", "-inf" (strict JSON)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v
