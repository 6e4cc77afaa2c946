"""Showing an offline evaluation: a table in the terminal, the JSON, an HTML page.

The HTML page is self-contained (plots are PNGs embedded as data URLs) so it can be mailed
or archived with the JSON it was made from.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from fyp.report_page import BASE_CSS, png_data_uri

__all__ = [
    "KUAIRAND_CREDIT",
    "best_by_metric",
    "metrics_table",
    "walk_table",
    "write_html",
    "write_json",
]

KUAIRAND_CREDIT = (
    "Data: KuaiRand-Pure, Gao et al., “KuaiRand: An Unbiased Sequential Recommendation "
    "Dataset with Randomly Exposed Videos”, CIKM 2022; licensed CC BY-SA 4.0."
)

# Lower is better for these; higher for every other metric.
LOWER_IS_BETTER = frozenset({"creator_gini", "freshness_days"})
# Descriptive: neither direction is "better" (reported, never crowned).
DESCRIPTIVE = frozenset({"distinct_tags@10", "distinct_creators@10"})

TABLE_METRICS: tuple[str, ...] = (
    "recall@10",
    "recall@50",
    "ndcg@50",
    "recall@100",
    "auc_long_view",
    "gauc_long_view",
    "gauc_session_long_view",
    "gauc_finish",
    "gauc_like",
    "ndcg_watch",
    "coverage",
    "creator_gini",
)
PLOT_METRICS: tuple[str, ...] = (
    "recall@50",
    "ndcg@50",
    "auc_long_view",
    "gauc_long_view",
    "coverage",
    "creator_gini",
)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")


def _all_metrics(result: dict[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for metrics in result["methods"].values():
        names.update(dict.fromkeys(metrics))
    return list(names)


def best_by_metric(result: dict[str, Any]) -> dict[str, list[str]]:
    """For each metric, the method(s) with the best mean, and those whose interval
    overlaps the best's (a tie within noise is not a win). Random never wins coverage or
    concentration: it is their reference point, not a contender."""
    out: dict[str, list[str]] = {}
    methods: dict[str, dict[str, Any]] = result["methods"]
    for metric in _all_metrics(result):
        if metric in DESCRIPTIVE:
            continue
        entries = [
            (name, m[metric])
            for name, m in methods.items()
            if metric in m and not (name == "random" and metric in {"coverage", "creator_gini"})
        ]
        if not entries:
            continue
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        best_name, best = max(entries, key=lambda e: sign * float(e[1]["mean"]))
        lo, hi = best["ci95"]
        winners = [best_name]
        for name, m in entries:
            if name == best_name:
                continue
            m_lo, m_hi = m["ci95"]
            if m_hi >= lo and m_lo <= hi:
                winners.append(name)
        out[metric] = winners
    return out


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def metrics_table(
    result: dict[str, Any], metrics: Sequence[str] = TABLE_METRICS, title: str | None = None
) -> Table:
    """Metrics as rows, methods as columns (a narrow terminal still fits): each cell the
    mean, with ± half the 95% interval's width below; the best of each row in green."""
    methods: dict[str, dict[str, Any]] = result["methods"]
    shown = [m for m in metrics if any(m in v for v in methods.values())]
    best = best_by_metric(result)
    table = Table(title=f"{title or 'Offline evaluation'}: mean, ± half the 95% bootstrap interval")
    table.add_column("metric", style="bold", no_wrap=True)
    for name in methods:
        table.add_column(name.replace("_", " "), justify="right")
    for metric in shown:
        cells = []
        for name, values in methods.items():
            if metric not in values:
                cells.append("—")
                continue
            v = values[metric]
            lo, hi = v["ci95"]
            mean = _fmt(v["mean"])
            if best.get(metric, [None])[0] == name:
                mean = f"[bold green]{mean}[/bold green]"
            cells.append(f"{mean}\n[dim]±{(hi - lo) / 2:.3f}[/dim]")
        table.add_row(metric, *cells)
    return table


def walk_table(result: dict[str, Any], metric: str = "recall@50") -> Table:
    """One metric of a daily walk: methods as rows; each day's mean, the pooled mean and
    its 95% interval as columns (the best of a column in green)."""
    days: dict[str, dict[str, Any]] = result["days"]
    columns = [*days.items(), ("pooled", result)]
    table = Table(title=f"Daily walk: {metric} per day and pooled over the days")
    table.add_column("method", style="bold", no_wrap=True)
    for day, _ in columns:
        table.add_column(day[5:] if day != "pooled" else day, justify="right")
    table.add_column("pooled 95%", justify="right")
    best = {day: best_by_metric(of).get(metric, [None])[0] for day, of in columns}
    for name, pooled in result["methods"].items():
        if metric not in pooled:
            continue
        cells = []
        for day, of_day in columns:
            v = of_day["methods"].get(name, {}).get(metric)
            mean = "—" if v is None else _fmt(v["mean"])
            cells.append(f"[bold green]{mean}[/]" if best[day] == name else mean)
        lo, hi = pooled[metric]["ci95"]
        table.add_row(name, *cells, f"{_fmt(lo)}–{_fmt(hi)}")
    return table


# ----------------------------------------------------------------------------- HTML


def _plots(result: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: list[tuple[str, str]] = []
    methods: dict[str, dict[str, Any]] = result["methods"]
    shown = [m for m in PLOT_METRICS if any(m in v for v in methods.values())]
    if shown:
        cols = 3
        rows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, metric in zip(axes.flat, shown, strict=False):
            names = [n for n, v in methods.items() if metric in v]
            means = [methods[n][metric]["mean"] for n in names]
            # A percentile interval need not contain the point; whiskers cannot point inwards.
            err = [
                [
                    max(0.0, methods[n][metric]["mean"] - methods[n][metric]["ci95"][0])
                    for n in names
                ],
                [
                    max(0.0, methods[n][metric]["ci95"][1] - methods[n][metric]["mean"])
                    for n in names
                ],
            ]
            colors = ["#d9480f" if n.startswith("fyp") else "#495057" for n in names]
            ax.barh(names, means, xerr=err, color=colors, capsize=3)
            ax.invert_yaxis()
            ax.set_title(metric)
            ax.grid(axis="x", alpha=0.3)
        for ax in list(axes.flat)[len(shown) :]:
            ax.axis("off")
        fig.tight_layout()
        plots.append(("Metrics by method (bars: mean; whiskers: 95% interval)", png_data_uri(fig)))
        plt.close(fig)

    curves: dict[str, Any] = result.get("curves", {})
    if curves:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, curve in curves.items():
            ks = [int(k) for k in curve["recall"]]
            style = "-" if name.startswith("fyp") else "--"
            ax.plot(ks, list(curve["recall"].values()), style, marker="o", ms=3, label=name)
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        plots.append(("Recall@K on full ranking", png_data_uri(fig)))
        plt.close(fig)

    calibration: dict[str, Any] = result.get("calibration", {})
    labels = sorted({label for per in calibration.values() for label in per})
    if labels:
        fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 3.8), squeeze=False)
        for ax, label in zip(axes.flat, labels, strict=True):
            top = 0.0
            for name, per in calibration.items():
                if label in per:
                    c = per[label]
                    ax.plot(c["predicted"], c["observed"], marker="o", ms=3, label=name)
                    top = max(top, *c["predicted"], *c["observed"])
            ax.plot([0, top], [0, top], ":", color="grey", label="perfect")
            ax.set_title(f"P({label})")
            ax.set_xlabel("mean predicted (deciles)")
            ax.set_ylabel("observed rate")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        plots.append(
            ("Calibration of predicted probabilities on test impressions", png_data_uri(fig))
        )
        plt.close(fig)
    return plots


_CSS = (
    BASE_CSS
    + """
td.best { font-weight: 700; color: #2b8a3e; }
.ci { color: #6c757d; font-size: 11px; display: block; }
.credit { color: #495057; font-size: 13px; border-top: 1px solid #dee2e6; padding-top: 1rem; }
"""
)


def _results_html(result: dict[str, Any], heading: str, unit: str) -> str:
    """The metrics × methods table of ``result["methods"]``, under ``heading``."""
    esc = html.escape
    methods: dict[str, dict[str, Any]] = result["methods"]
    best = best_by_metric(result)
    parts = [f"<h2>{esc(heading)}</h2><p>Mean over {unit}, 95% bootstrap interval below. "]
    parts.append("Bold: the best mean of the row (lower is better for creator_gini and ")
    parts.append("freshness_days).</p><table><tr><th>metric</th>")
    parts.extend(f"<th>{esc(name)}</th>" for name in methods)
    parts.append("</tr>")
    for metric in _all_metrics(result):
        parts.append(f"<tr><td>{esc(metric)}</td>")
        winner = best.get(metric, [None])[0]
        for name, values in methods.items():
            if metric not in values:
                parts.append("<td>—</td>")
                continue
            v = values[metric]
            cls = " class='best'" if name == winner else ""
            parts.append(
                f"<td{cls}>{_fmt(v['mean'])}<span class='ci'>"
                f"{_fmt(v['ci95'][0])}–{_fmt(v['ci95'][1])}</span></td>"
            )
        parts.append("</tr>")
    parts.append("</table>")
    return "".join(parts)


def write_html(result: dict[str, Any], path: Path, command: str | None = None) -> None:
    esc = html.escape
    best = best_by_metric(result)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>fyp offline evaluation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>fyp offline evaluation</h1>",
    ]
    if command:
        parts.append(f"<p>Command: <code>{esc(command)}</code></p>")
    parts.append("<h2>Protocol</h2><table>")
    for key, value in result["protocol"].items():
        parts.append(f"<tr><td>{esc(str(key))}</td><td>{esc(json.dumps(value))}</td></tr>")
    parts.append("</table>")

    days: dict[str, dict[str, Any]] = result.get("days", {})
    unit = "user-days" if days else "users"
    parts.append(_results_html(result, "Pooled over the walk's days" if days else "Results", unit))
    for day, of_day in days.items():
        parts.append(_results_html(of_day, f"{day} (walk day)", "users"))

    parts.append("<h2>Who wins each metric</h2><table><tr><th>metric</th><th>best</th>")
    parts.append("<th>within its interval</th></tr>")
    for metric, winners in best.items():
        parts.append(
            f"<tr><td>{esc(metric)}</td><td>{esc(winners[0])}</td>"
            f"<td>{esc(', '.join(winners[1:]) or '—')}</td></tr>"
        )
    parts.append("</table>")

    for title, src in _plots(result):
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='{src}'>")

    used: dict[str, dict[str, str]] = result.get("scores_used", {})
    if used:
        parts.append("<h2>What scored the impressions</h2><table><tr><th>method</th>")
        labels = sorted({label for per in used.values() for label in per})
        parts.extend(f"<th>{esc(label)}</th>" for label in labels)
        parts.append("</tr>")
        for name, per in used.items():
            parts.append(f"<tr><td>{esc(name)}</td>")
            parts.extend(f"<td>{esc(per.get(label, '—'))}</td>" for label in labels)
            parts.append("</tr>")
        parts.append("</table>")

    timings: dict[str, dict[str, float]] = result.get("timings_s", {})
    if timings:
        parts.append("<h2>Time taken (s)</h2><table><tr><th>method</th><th>fit</th>")
        parts.append("<th>rank</th><th>impressions</th></tr>")
        for name, t in timings.items():
            cells = "".join(
                f"<td>{t[k]:.2f}</td>" if k in t else "<td>—</td>"
                for k in ("fit", "rank", "impressions")
            )
            parts.append(f"<tr><td>{esc(name)}</td>{cells}</tr>")
        parts.append("</table>")

    parts.append(f"<p class='credit'>{esc(KUAIRAND_CREDIT)}</p></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))
