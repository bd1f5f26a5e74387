"""A diagnosis written to a folder: report.md, diagnosis.json and PNG plots (matplotlib, headless)
of the gain and gradient norm by depth before and after the recommended rewrite, and the trial's
loss curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(data: dict[str, Any], text: str, directory: str | Path) -> list[Path]:
    """Write report.md (around ``text``, the printed diagnosis), diagnosis.json (``data``, its
    ``to_dict()``) and the plots into ``directory`` (created); the paths written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "diagnosis.json"]
    paths[0].write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    figures = _figures(data, out)
    report = out / "report.md"
    report.write_text(_markdown(text, data, figures))
    return [report, *paths, *figures]


def _markdown(text: str, data: dict[str, Any], figures: list[Path]) -> str:
    rec = data["recommendation"]
    verdict = rec["method"].upper() if rec["method"] else "leave it as it is"
    lines = [
        f"# netadv doctor: {data['model']}",
        "",
        f"**Recommendation: {verdict}.**",
        "",
        rec["reason"] + ".",
        "",
        "```text",
        text,
        "```",
        "",
        "## Evidence",
        "",
    ]
    lines += [f"- {e}" for e in rec["evidence"]]
    if rec["plan"]:
        lines += ["", "## The plan it would apply", "", "```text", rec["plan"], "```"]
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in figures]
    lines += [
        "",
        "The full data (every site, every layer, the trial's curves) is in "
        "[diagnosis.json](diagnosis.json); how the doctor decides: docs/DOCTOR.md.",
        "",
    ]
    return "\n".join(lines)


def _figures(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    after = data["after"]
    label = f"after {after['method']}" if after else None
    paths = []
    for name, key, value, xlabel in (
        ("gain", "sites", "gain", "activation site (forward order)"),
        ("gradient_norms", "gradient_norms", "norm", "weight layer (input side first)"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        _series(ax, data[key], value, "before")
        if after:
            _series(ax, after[key], value, label)
        ax.set(
            xlabel=xlabel,
            ylabel="E|phi'(z)|" if value == "gain" else "weight gradient norm",
            yscale="log",
            title=f"{data['model']}: {name.replace('_', ' ')} by depth",
        )
        ax.legend()
        paths.append(_save(fig, out / f"{name}.png", plt))
    if data["trial"]:
        paths.append(_curves(data["trial"], data["model"], out / "trial.png", plt))
    return paths


def _series(ax, rows: list[dict[str, Any]], key: str, label: str) -> None:
    points = [(i, r[key]) for i, r in enumerate(rows) if isinstance(r.get(key), float | int)]
    points = [(i, v) for i, v in points if v > 0]
    if points:
        ax.plot(*zip(*points), marker="o", ms=3, label=label)


def _curves(trial: dict[str, Any], model: str, path: Path, plt) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in trial["arms"]:
        curve = [v for v in arm["curve"] if isinstance(v, float | int)]
        step = max(1, -(-arm["steps"] // max(1, len(arm["curve"]))))
        ax.plot([i * step for i in range(len(curve))], curve, label=arm["name"])
    ax.set(xlabel="step", ylabel="training loss", title=f"{model}: the doctor's trial")
    ax.legend()
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
