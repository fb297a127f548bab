"""The report step (notebook ``08_report_tables``): tables over seeds and accuracy-vs-shots figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..datasets import GROUPS
from ..registry import study_order
from ..runs import aggregate, format_table, load_records, records_frame, stale_records, write_tables
from ..spec import RunSpec

TABLE_NAME = "results"


@dataclass
class ReportTables:
    """Outputs of :func:`report_tables`.

    Attributes:
        table: the aggregate (one row per settings group and K: ``n_seeds``, means, stds).
        display: the same with ``mean ± std`` strings (percent).
        runs: one row per finished run (metrics, seconds, settings hash).
        figures: ``{name: Figure}`` (matplotlib; the plotly versions are written as HTML).
        paths: files written under ``figures/{dataset}/tables/``.
        stale: records the current code would not produce for the same command (printed too).
    """

    table: Any
    display: Any
    runs: Any
    figures: dict[str, Any]
    paths: list[Path]
    stale: list = field(default_factory=list)


#: The separation numbers every run records (:func:`lowres_clip.analysis.separation.separation_metrics`)
#: that the report tabulates and draws per method.
SEPARATION = {
    "gap_matched_mean": "matched image-text cosine (modality gap)",
    "gap_centroid": "image-text centroid distance",
    "silhouette_in_full_set_all": "silhouette of the test features (true classes)",
    "v_measure": "V-measure of the predictions",
    "collapse_top_share": "share of the most-predicted class",
}


def _sorted(table):
    rank = {m: i for i, m in enumerate(study_order(table["method"]))}
    return table.sort_values(["dataset", "model_weights", "method", "setting", "shots"],
                             key=lambda col: col.map(rank) if col.name == "method" else col).reset_index(drop=True)


def report_tables(spec: RunSpec, metrics: Sequence[str] = ("top1", "balanced"), records=None,
                  plotly_js: str | bool = "directory") -> ReportTables:
    """Aggregate every finished run of the dataset over seeds and write tables and figures.

    Runs are grouped by the settings hash in their records (never by keys), so runs that differ in
    anything but the seed are separate rows, named by what sets them apart. Writes, under
    ``figures/{dataset}/tables/``: ``results.{csv,md,tex}`` (mean ± std over seeds), ``separation.{csv,md,tex}``
    and ``{number}_by_method.png`` for the :data:`SEPARATION` numbers of runs that recorded them, ``runs.csv``
    (one row per run), ``methods_by_shots.png`` (bars per method grouped by K) and, for each metric
    (and head / medium / tail groups when present), ``{metric}_vs_shots.png`` and ``.html``: one
    line per method with a band of ±1 std over seeds, zero-shot and the linear probe dashed.

    Args:
        records: the records to report (default: every record of the dataset under the runs root).
        plotly_js: how the HTML figures get plotly.js (``directory``: a local copy beside them;
            ``cdn``: a link, for committed figures).
    """
    from .. import plots

    records = load_records(spec.runs_root, spec.dataset) if records is None else records
    if not records:
        raise FileNotFoundError(f"no finished runs of {spec.dataset!r} under {spec.runs_root}; "
                                "run some methods first (python -m lowres_clip.study ...).")
    group_metrics = [f"{m}_{g}" for m in metrics for g in GROUPS if any(f"{m}_{g}" in r.metrics for r in records)]
    all_metrics = [*metrics, *group_metrics]
    table = _sorted(aggregate(records, all_metrics))
    out = spec.tables_dir
    paths = write_tables(table, out, TABLE_NAME, metrics)
    runs = records_frame(records, all_metrics)
    paths += plots.save_table(runs, out, "runs", formats=("csv",))
    order = study_order(runs["method"])
    row_order = [r for m in order for r in dict.fromkeys(runs.loc[runs["method"] == m, "row"])]
    figures = {"methods_by_shots": plots.compare_methods(
        runs, value=metrics[0], method="row", hue="shots", order=row_order,
        title=f"{spec.dataset}: {metrics[0]} per method (mean ± std over seeds)")}
    for m in all_metrics:
        title = f"{spec.dataset}: {m} vs shots (mean ± 1 std over seeds)"
        figures[f"{m}_vs_shots"] = plots.accuracy_vs_shots(table, m, title=title)
        paths += plots.save_figure(plots.accuracy_vs_shots_plotly(table, m, title=title), out, f"{m}_vs_shots",
                                   plotly_js=plotly_js)
    separation = [m for m in SEPARATION if any(m in r.metrics for r in records)]
    if separation:  # every run's separability, modality gap and collapse (analysis.separation)
        with_sep = [r for r in records if all(m in r.metrics for m in separation)]
        paths += write_tables(_sorted(aggregate(with_sep, separation)), out, "separation", separation)
        sep_runs = records_frame(with_sep, separation)
        for m in separation:
            figures[f"{m}_by_method"] = plots.compare_methods(
                sep_runs, value=m, method="row", hue="shots", order=[r for r in row_order if r in set(sep_runs["row"])],
                title=f"{spec.dataset}: {SEPARATION[m]} per method (mean ± std over seeds)")
    for name, fig in figures.items():
        paths += plots.save_figure(fig, out, name)
    stale = stale_records(records)
    for s in stale:
        print(f"STALE: {s.run_id}: {s.reason} (stored settings {s.stored_hash}, current {s.current_hash}); "
              "rerun it before reading its numbers next to this code.")
    return ReportTables(table, format_table(table, metrics), runs, figures, paths, stale)
