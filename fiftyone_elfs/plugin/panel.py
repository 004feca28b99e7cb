"""The ELFS panel: one run at a glance (difficulty histogram, cluster balance, parameters,
delegated runs) with actions to open the embedding plot, show the coreset and export it.

The numbers come from `fiftyone_elfs.run_summary`; this module only turns them into charts. The
colours are `fiftyone_elfs.app_colors`, which the pipeline also gives the App for the region
and pseudo-label fields, so a region or cluster has one colour in this panel, the Embeddings
panel and the grid.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_elfs import dataset_io, run_summary, runs
from fiftyone_elfs.app_colors import REGION_COLORS, cluster_colors
from fiftyone_elfs.plugin.forms import dataset_gone

PANEL_NAME = "elfs_panel"
REGION_LEGEND = {
    "dropped_hard": "dropped: hardest (likely noisy)",
    "coreset": "coreset (to label)",
    "dropped_easy": "dropped: easiest",
    "not_drawn": "not drawn (CCS or typical selection covers the pool)",
}
REGION_STYLE = {r: (REGION_LEGEND[r], REGION_COLORS[r]) for r in runs.REGIONS}  # name, colour
POOL_OPACITY = 0.4  # the pool's bar of a cluster: its colour, faded; the coreset's: solid


def histogram_traces(hist: run_summary.ScoreHistogram) -> list[dict[str, Any]]:
    """Stacked bars of the score histogram, one trace per coreset region."""
    centers = [(a + b) / 2 for a, b in zip(hist.edges[:-1], hist.edges[1:], strict=True)]
    width = hist.edges[1] - hist.edges[0]
    traces = []
    for region in runs.REGIONS:
        name, colour = REGION_STYLE[region]
        traces.append(
            {
                "type": "bar",
                "name": name,
                "x": centers,
                "y": hist.counts[region],
                "width": width,
                "marker": {"color": colour},
            }
        )
    return traces


def histogram_title(score: str, mode: str | None) -> str:
    """The difficulty chart's title: where the ranking was cut, or, for typical selection (which
    does not rank by difficulty), only where its picks fell on that score."""
    if mode == "typical":
        return f"Difficulty ({score}) of the pool: typical selection does not choose by it"
    return f"Difficulty ({score}): where the ranking was cut"


def cluster_traces(clusters: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """Share of each pseudo-label in the pool and in the coreset (over/under-representation).

    Each cluster's bars have its App colour (`cluster_colors`): faded for the pool, solid for
    the coreset.
    """
    labels = [c[0] for c in clusters]
    colours = cluster_colors(labels)
    pool_total = sum(c[1] for c in clusters) or 1
    core_total = sum(c[2] for c in clusters) or 1
    bar_colours = [colours[label] for label in labels]
    return [
        {
            "type": "bar",
            "name": "pool",
            "x": labels,
            "y": [round(100 * c[1] / pool_total, 2) for c in clusters],
            "text": [str(c[1]) for c in clusters],
            "marker": {"color": bar_colours, "opacity": POOL_OPACITY},
        },
        {
            "type": "bar",
            "name": "coreset",
            "x": labels,
            "y": [round(100 * c[2] / core_total, 2) for c in clusters],
            "text": [str(c[2]) for c in clusters],
            "marker": {"color": bar_colours},
        },
    ]


def _bar_layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    """A Plotly bar-chart layout with room for the title and a legend below the axis."""
    return {
        "title": {"text": title},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}},
        "height": 340,
        "margin": {"t": 60, "b": 50},
        "showlegend": True,
        "legend": {"orientation": "h", "y": -0.3},
        **extra,
    }


def _params_markdown(summary: run_summary.RunSummary) -> str:
    lines = ["| stage | parameters |", "|---|---|"]
    for stage, params in summary.params.items():
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if v not in ({}, [], ""))
        lines.append(f"| {stage} | {shown} |")
    return "\n".join(lines)


def _trust_markdown(trust: dict[str, Any] | None) -> str:
    if trust and "stability" not in trust and trust.get("reason"):
        return f"\n\nPseudo-label trust: **not measured** ({trust['reason']})."
    if not trust or "stability" not in trust:
        return ""
    return (
        f"\n\nPseudo-label trust: **{trust['level']}** (k-means from other starts agrees with "
        f"the pseudo-labels on {trust['stability']:.0%} of samples; strong at >= "
        f"{trust['threshold']:.0%}; {trust['knn_consistency']:.0%} of nearest neighbours share "
        "a sample's pseudo-label)."
    )


def _outcome_markdown(summary: run_summary.RunSummary) -> str:
    trust = _trust_markdown(summary.trust)
    if summary.clustering_fallback:
        trust += f"\n\n**Pseudo-labels by k-means**: {summary.clustering_fallback}."
    if summary.n_selected is None:
        return (
            f"Key **{summary.key}**: stages run: {', '.join(summary.stages)}; no coreset yet."
            + trust
        )
    rule = f"\n\nSelection rule: **{summary.mode}**"
    rule += f": {summary.mode_reason}." if summary.mode_reason else "."
    notices = "".join(f"\n\n**Note**: {notice}" for notice in summary.notices)
    saved = f", saved view `{summary.saved_view}`" if summary.saved_view else ""
    return (
        f"Key **{summary.key}**: **{summary.n_selected}** of {summary.n_pool} samples selected "
        f"(tag `{summary.tag}`{saved}). {summary.beta_reason}" + rule + notices + trust
    )


def _delegated_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return (
            "No delegated ELFS runs on this dataset. Long runs scheduled from the operator forms "
            "appear here; start a worker with `fiftyone delegated launch`."
        )
    lines = ["| operator | state | progress | queued |", "|---|---|---|---|"]
    for r in rows:
        pct = "" if r["progress"] is None else f"{100 * r['progress']:.0f}% {r['label']}"
        state = "**stalled**: its worker stopped" if r.get("stalled") else r["state"]
        lines.append(f"| {r['operator']} | {state} | {pct} | {r['queued_at'][:19]} |")
    stalled = [r["id"] for r in rows if r.get("stalled")]
    if stalled:
        lines += [
            "",
            "A stalled run is marked running but no worker is computing it (killed or crashed; "
            "the progress shown is its last). Resume it with `fiftyone delegated rerun <id>` or "
            "clear it with `fiftyone delegated fail <id>`; ids: "
            + ", ".join(f"`{i}`" for i in stalled)
            + ".",
        ]
    return "\n".join(lines)


def _labeling_markdown(summary: run_summary.RunSummary) -> str:
    """Selection rounds of the key and what came back from each annotation run."""
    lines = []
    if summary.rounds:
        shown = ", ".join(f"round {r}: {n}" for r, n in summary.rounds.items())
        lines += [f"Selected per round: {shown}.", ""]
    if not summary.annotations:
        lines.append(
            "Nothing sent to Label Studio yet: run 'ELFS: send to Label Studio' on the coreset."
        )
        return "\n".join(lines)
    lines += [
        "| annotation run | label field | sent | labeled | skipped | unanswered |",
        "|---|---|---|---|---|---|",
    ]
    for a in summary.annotations:
        counts = ["not loaded"] * 3
        if a["loaded"]:
            counts = [a["n_labeled"], a["n_skipped"], a["n_unanswered"]]
        cells = " | ".join(str(c) for c in counts)
        lines.append(f"| {a['anno_key']} | {a['label_field']} | {a['n_sent']} | {cells} |")
    return "\n".join(lines)


class ElfsPanel(foo.Panel):
    @property
    def config(self) -> foo.PanelConfig:
        return foo.PanelConfig(
            name=PANEL_NAME,
            label="ELFS",
            icon="insights",
            surfaces="grid",
            help_markdown="Label-free coreset selection: how the difficulty ranking was cut, "
            "which clusters the coreset covers, and the run's parameters.",
        )

    # ------------------------------------------------------------------ events

    def on_load(self, ctx: Any) -> None:
        self._load(ctx)

    def on_change_dataset(self, ctx: Any) -> None:
        ctx.panel.state.key = None
        self._load(ctx)

    def on_change_key(self, ctx: Any) -> None:
        ctx.panel.state.key = ctx.params.get("value")
        self._load(ctx)

    def refresh(self, ctx: Any) -> None:
        self._load(ctx)

    def open_embeddings(self, ctx: Any) -> None:
        key = self._key(ctx)
        brain_key = None if key is None else run_summary.places(ctx.dataset, key)[2]
        if brain_key is None:
            ctx.ops.notify("This key has no embedding plot: run 'ELFS: embedding plot'")
            return
        region = runs.PipelineNames(key).region_field
        ctx.ops.open_panel(
            "Embeddings",
            layout="horizontal",
            is_active=True,
            state={"brainResult": brain_key, "colorByField": region},
        )
        # The Embeddings panel of FiftyOne 1.22 opens on its list of plots whatever the state.
        ctx.ops.notify(f"Embeddings: pick '{brain_key}', then colour by '{region}'")

    def show_coreset(self, ctx: Any) -> None:
        key = self._key(ctx)
        tag, saved_view, _ = run_summary.places(ctx.dataset, key) if key else (None, None, None)
        if tag is None:
            ctx.ops.notify("This key has no coreset yet: run 'ELFS: select coreset'")
            return
        if saved_view is None:  # deleted by the user: the tag still marks the coreset
            ctx.ops.set_view(view=dataset_io.tagged(ctx.dataset, tag))  # every slice
            return
        ctx.ops.set_view(name=saved_view)

    def show_all(self, ctx: Any) -> None:
        ctx.ops.clear_view()

    def export(self, ctx: Any) -> None:
        ctx.prompt(f"{run_summary.OPERATOR_PREFIX}export_coreset", params={"key": self._key(ctx)})

    def run_pipeline(self, ctx: Any) -> None:
        ctx.prompt(f"{run_summary.OPERATOR_PREFIX}run_elfs_pipeline")

    # ------------------------------------------------------------------ state

    def _key(self, ctx: Any) -> str | None:
        if dataset_gone(ctx) is not None:  # deleted while its tab was open
            return None
        keys = sorted(runs.list_pipelines(ctx.dataset)) if ctx.dataset is not None else []
        key = ctx.panel.state.key
        if key not in keys:
            key = "elfs" if "elfs" in keys else (keys[0] if keys else None)
        return key

    def _load(self, ctx: Any) -> None:
        gone = dataset_gone(ctx)
        ctx.panel.state.gone = gone or ""
        if gone is not None:
            ctx.panel.state.key, ctx.panel.state.keys = None, []
            return
        key = self._key(ctx)
        ctx.panel.state.key = key
        dataset = ctx.dataset  # an empty dataset is falsy (len 0) and may hold runs
        ctx.panel.state.keys = sorted(runs.list_pipelines(dataset)) if dataset is not None else []
        summary = None if key is None else run_summary.summarize_run(ctx.dataset, key)
        ctx.panel.state.outcome = "" if summary is None else _outcome_markdown(summary)
        ctx.panel.state.params = "" if summary is None else _params_markdown(summary)
        ctx.panel.state.has_histogram = bool(summary and summary.histogram)
        ctx.panel.state.has_clusters = bool(summary and summary.clusters)
        ctx.panel.state.score = summary.histogram.score if summary and summary.histogram else ""
        ctx.panel.state.mode = summary.mode if summary is not None else ""
        if summary is not None and summary.histogram is not None:
            ctx.panel.data.difficulty_histogram = histogram_traces(summary.histogram)
        if summary is not None and summary.clusters:
            ctx.panel.data.cluster_balance = cluster_traces(summary.clusters)
        delegated = run_summary.delegated_runs(ctx.dataset) if ctx.dataset is not None else []
        ctx.panel.state.delegated = _delegated_markdown(delegated)
        if summary is not None:
            ctx.panel.state.labeling = _labeling_markdown(summary)

    # ------------------------------------------------------------------ layout

    def render(self, ctx: Any) -> types.Property:
        panel = types.Object()
        state = ctx.panel.state
        if state.gone:
            panel.md(f"**ELFS**: {state.gone}", name="gone")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        if not state.keys:
            panel.md(
                "**ELFS**: no ELFS run on this dataset yet. Run the pipeline to pick the samples "
                "worth labeling.",
                name="intro",
            )
            panel.btn("run_pipeline", label="Select a coreset...", on_click=self.run_pipeline)
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        # The key's dropdown on its own row: beside a button, the App draws its label over it.
        panel.enum(
            "key",
            list(state.keys),
            default=state.key,
            label="Run key",
            view=types.DropdownView(),
            on_change=self.on_change_key,
        )
        panel.md(state.outcome or "", name="outcome")
        actions = panel.h_stack("actions", align_x="left", gap=2)
        actions.btn("refresh", label="Refresh", on_click=self.refresh)
        actions.btn("open_embeddings", label="Open Embeddings panel", on_click=self.open_embeddings)
        actions.btn("show_coreset", label="Show coreset", on_click=self.show_coreset)
        actions.btn("show_all", label="Show all samples", on_click=self.show_all)
        actions.btn("export", label="Export coreset...", on_click=self.export)
        if state.has_histogram:
            title = histogram_title(state.score, state.mode)
            layout = _bar_layout(title, state.score, "samples", barmode="stack", bargap=0)
            panel.plot("difficulty_histogram", layout=layout, config={"displayModeBar": False})
        if state.has_clusters:
            # one colour per cluster (the App's): no pool/coreset legend, the title says it
            title = "Pseudo-label clusters: % of pool (faded) vs coreset (solid)"
            layout = _bar_layout(
                title, "pseudo-label", "% of samples", barmode="group", showlegend=False
            )
            layout["xaxis"]["type"] = "category"
            panel.plot("cluster_balance", layout=layout, config={"displayModeBar": False})
        # a title in the same markdown as a table is not drawn by the App: separate blocks
        panel.md("**Parameters**", name="params_title")
        panel.md(state.params or "", name="params")
        panel.md("**Labeling rounds**", name="labeling_title")
        panel.md(state.labeling or "", name="labeling")
        panel.md("**Delegated runs**", name="delegated_title")
        panel.md(state.delegated or "", name="delegated")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2))
