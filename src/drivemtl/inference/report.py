"""The demo report a person reads: Markdown and HTML with scores vs baselines, curves, overlays."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@dataclass
class TaskScore:
    """One task's headline metric for the model and for a trivial baseline."""

    task: str
    metric: str
    value: float
    baseline: float
    baseline_name: str
    higher_is_better: bool = True

    @property
    def beats_baseline(self) -> bool:
        """Whether the model is strictly better than the baseline (NaN never beats)."""
        if math.isnan(self.value):
            return False
        if math.isnan(self.baseline):
            return True
        return self.value > self.baseline if self.higher_is_better else self.value < self.baseline


@dataclass
class DemoReport:
    """Everything the report shows; paths are relative to the report's folder or absolute."""

    title: str
    summary: str
    dataset_card: str
    recipe: str
    scores: list[TaskScore]
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    loss_curves: Path | None = None
    overlays: list[Path] = field(default_factory=list)
    clip: Path | None = None  # a tracked clip (GIF / MP4) with ids and trails
    clip_strip: Path | None = None  # a few of its frames side by side
    flow_pictures: list[Path] = field(default_factory=list)  # frame | predicted | true flow
    timings: Mapping[str, float] = field(default_factory=dict)

    def video_pictures(self) -> list[tuple[str, Path]]:
        """(caption, path) of the video part's pictures, in the order the report shows them."""
        out = []
        if self.clip is not None:
            out.append(("tracked clip (ids and trails)", self.clip))
        if self.clip_strip is not None:
            out.append(("frames of the tracked clip", self.clip_strip))
        out += [("flow: frame, predicted, true (colour wheel)", p) for p in self.flow_pictures]
        return out


def plot_loss_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """Plot per-task training losses (step, value) on a log axis into a PNG."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, points in sorted(curves.items()):
        finite = [(s, v) for s, v in points if math.isfinite(v) and v > 0]
        if finite:
            steps, values = zip(*finite, strict=True)
            ax.plot(steps, values, label=name, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title("training losses per task")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def render_markdown(report: DemoReport, root: Path) -> str:
    """The report as Markdown (image links relative to `root`)."""
    lines = [f"# {report.title}", "", report.summary, ""]
    lines += ["## Scores against trivial baselines", ""]
    lines += ["| task | metric | model | baseline | baseline kind | beats baseline |"]
    lines += ["|---|---|---|---|---|---|"]
    for s in report.scores:
        arrow = "↑" if s.higher_is_better else "↓"
        verdict = "yes" if s.beats_baseline else "**no**"
        lines.append(
            f"| {s.task} | {s.metric} {arrow} | {_fmt(s.value)} | {_fmt(s.baseline)} | "
            f"{s.baseline_name} | {verdict} |"
        )
    if report.metrics:
        lines += ["", "## All metrics", ""]
        for task, values in report.metrics.items():
            cells = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items())
            lines.append(f"- **{task}**: {cells}")
    if report.loss_curves is not None:
        lines += ["", "## Training", "", f"![loss curves]({_rel(report.loss_curves, root)})"]
    if report.overlays:
        lines += ["", "## Predictions on held-out frames", ""]
        lines += [f"![{p.stem}]({_rel(p, root)})" for p in report.overlays]
    if report.video_pictures():
        lines += ["", "## Video tasks on a held-out clip", ""]
        lines += [f"![{caption}]({_rel(p, root)})" for caption, p in report.video_pictures()]
    lines += ["", "## Dataset card", "", "```yaml", report.dataset_card.rstrip(), "```"]
    lines += ["", "## Recipe", "", "```yaml", report.recipe.rstrip(), "```"]
    if report.timings:
        lines += ["", "## Timings", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in report.timings.items()]
    return "\n".join(lines) + "\n"


def render_html(report: DemoReport, root: Path) -> str:
    """The same report as a self-contained HTML page (images referenced relatively)."""
    esc = html.escape
    rows = []
    for s in report.scores:
        colour = "#1a7f37" if s.beats_baseline else "#cf222e"
        rows.append(
            f"<tr><td>{esc(s.task)}</td><td>{esc(s.metric)} {'↑' if s.higher_is_better else '↓'}"
            f"</td><td>{_fmt(s.value)}</td><td>{_fmt(s.baseline)}</td>"
            f"<td>{esc(s.baseline_name)}</td><td style='color:{colour}'>"
            f"{'yes' if s.beats_baseline else 'no'}</td></tr>"
        )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(report.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%;margin:4px 0}pre{background:#f6f8fa;padding:8px;overflow:auto}</style>",
        "</head><body>",
        f"<h1>{esc(report.title)}</h1><p>{esc(report.summary)}</p>",
        "<h2>Scores against trivial baselines</h2><table><tr><th>task</th><th>metric</th>"
        "<th>model</th><th>baseline</th><th>baseline kind</th><th>beats baseline</th></tr>",
        *rows,
        "</table>",
    ]
    if report.metrics:
        parts.append("<h2>All metrics</h2><ul>")
        for task, values in report.metrics.items():
            cells = ", ".join(f"{esc(k)} {_fmt(v)}" for k, v in values.items())
            parts.append(f"<li><b>{esc(task)}</b>: {cells}</li>")
        parts.append("</ul>")
    if report.loss_curves is not None:
        parts.append(f"<h2>Training</h2><img src='{esc(_rel(report.loss_curves, root))}'>")
    if report.overlays:
        parts.append("<h2>Predictions on held-out frames</h2>")
        parts += [f"<img src='{esc(_rel(p, root))}' alt='{esc(p.stem)}'>" for p in report.overlays]
    if report.video_pictures():
        parts.append("<h2>Video tasks on a held-out clip</h2>")
        parts += [f"<figure><img src='{esc(_rel(p, root))}' alt='{esc(caption)}'>"
                  f"<figcaption>{esc(caption)}</figcaption></figure>"
                  for caption, p in report.video_pictures()]  # fmt: skip
    parts.append(f"<h2>Dataset card</h2><pre>{esc(report.dataset_card)}</pre>")
    parts.append(f"<h2>Recipe</h2><pre>{esc(report.recipe)}</pre>")
    if report.timings:
        parts.append("<h2>Timings</h2><ul>")
        parts += [f"<li>{esc(k)}: {v:.1f} s</li>" for k, v in report.timings.items()]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(report: DemoReport, out_dir: Path) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "report.md"
    html_path = out_dir / "report.html"
    md_path.write_text(render_markdown(report, out_dir), encoding="utf-8")
    html_path.write_text(render_html(report, out_dir), encoding="utf-8")
    return md_path, html_path
