"""The report step (notebook ``08_report_tables``): tables over seeds and accuracy-vs-shots figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..datasets import GROUPS
from ..registry import study_order
from ..runs import aggregate_frame, format_table, load_records, records_frame, split_long_tail, stale_records, write_tables
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
        longtail: the long-tailed runs' aggregate (:func:`longtail_table`), ``None`` without them.
    """

    table: Any
    display: Any
    runs: Any
    figures: dict[str, Any]
    paths: list[Path]
    stale: list = field(default_factory=list)
    longtail: Any = None


#: The separation numbers every run records (:func:`lowres_clip.analysis.separation.separation_metrics`)
#: that the report tabulates and draws per method.
SEPARATION = {
    "gap_matched_mean": "matched image-text cosine (modality gap)",
    "gap_centroid": "image-text centroid distance",
    "silhouette_in_full_set_all": "silhouette of the test features (true classes)",
    "v_measure": "V-measure of the predictions",
    "collapse_top_share": "share of the most-predicted class",
}


#: What the long-tail table reports per method and imbalance ratio (those the records have).
LONGTAIL_METRICS = ("top1", "balanced", "top1_head", "top1_medium", "top1_tail", "collapse_top_share",
                    "gap_matched_mean")
#: Settings the long-tail rows do not name (the table has a ratio column).
LONGTAIL_IGNORE = ("long_tail_ratio",)
#: The panels of the accuracy-vs-ratio figure.
LONGTAIL_PANELS = ("balanced", "top1_head", "top1_medium", "top1_tail")


def _sorted(table):
    rank = {m: i for i, m in enumerate(study_order(table["method"]))}
    return table.sort_values(["dataset", "model_weights", "method", "setting", "shots", "long_tail_ratio"],
                             key=lambda col: col.map(rank) if col.name == "method" else col).reset_index(drop=True)


def longtail_table(long_tailed, balanced=()):
    """One row per method (plus its own settings) and imbalance ratio, mean and std over seeds of
    :data:`LONGTAIL_METRICS`; ratio 1 is the balanced run of the same method at the same K (from
    ``balanced``), where every class has K shots and head / medium / tail do not exist.
    ``(table, metrics, runs)``: ``runs`` the per-run frame of the long-tailed runs, with the table's row names."""
    shots = {r.identity["shots"] for r in long_tailed}
    methods = {r.identity["method"] for r in long_tailed}
    ones = [r for r in balanced if r.identity["shots"] in shots and r.identity["method"] in methods]
    rows = [*long_tailed, *ones]
    metrics = [m for m in LONGTAIL_METRICS if any(m in r.metrics for r in rows)]
    frame = records_frame(rows, metrics, ignore=LONGTAIL_IGNORE)
    return _sorted(aggregate_frame(frame, metrics)), metrics, frame[frame["long_tail_ratio"] != 1].reset_index(drop=True)


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
    Runs with an imbalance ratio (long-tailed few-shot) are kept out of these and reported apart
    (:func:`longtail_table`): ``longtail.{csv,md,tex}``, ``longtail_vs_ratio.png`` and, from records
    that store it, ``recall_vs_training_shots.png`` (:func:`per_class_frame`).

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
    records, long_tailed = split_long_tail(records)
    lt = _longtail_report(spec, long_tailed, records) if long_tailed else None
    if not records:  # a long-tailed study only
        return lt
    group_metrics = [f"{m}_{g}" for m in metrics for g in GROUPS if any(f"{m}_{g}" in r.metrics for r in records)]
    all_metrics = [*metrics, *group_metrics]
    runs = records_frame(records, all_metrics)
    table = _sorted(aggregate_frame(runs, all_metrics))
    out = spec.tables_dir
    paths = write_tables(table, out, TABLE_NAME, metrics)
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
    paths += _separation(spec, records, row_order, "shots", "", figures)
    for name, fig in figures.items():
        paths += plots.save_figure(fig, out, name)
    if lt is not None:
        figures.update(lt.figures)
        paths += lt.paths
    stale = _stale(records) + ([] if lt is None else lt.stale)
    return ReportTables(table, format_table(table, metrics), runs, figures, paths, stale,
                        None if lt is None else lt.longtail)


def _separation(spec: RunSpec, records, row_order: Sequence[str], hue: str, prefix: str, figures: dict[str, Any],
                ignore: Sequence[str] = ()) -> list[Path]:
    """Every run's separability, modality gap and collapse (:data:`SEPARATION`, from the records that
    have them): ``{prefix}separation.{csv,md,tex}`` written, one bar chart per number and method
    (bars per ``hue``: K, or the imbalance ratio) added to ``figures`` as ``{prefix}{number}_by_method``."""
    from .. import plots

    separation = [m for m in SEPARATION if any(m in r.metrics for r in records)]
    if not separation:
        return []
    sep_runs = records_frame([r for r in records if all(m in r.metrics for m in separation)], separation, ignore)
    paths = write_tables(_sorted(aggregate_frame(sep_runs, separation)), spec.tables_dir, f"{prefix}separation", separation)
    for m in separation:
        figures[f"{prefix}{m}_by_method"] = plots.compare_methods(
            sep_runs, value=m, method="row", hue=hue, order=[r for r in row_order if r in set(sep_runs["row"])],
            title=f"{spec.dataset}: {SEPARATION[m]} per method (mean ± std over seeds)")
    return paths


def _stale(records) -> list:
    """:func:`stale_records`, each printed."""
    stale = stale_records(records)
    for s in stale:
        print(f"STALE: {s.run_id}: {s.reason} (stored settings {s.stored_hash}, current {s.current_hash}); "
              "rerun it before reading its numbers next to this code.")
    return stale


def _longtail_report(spec: RunSpec, long_tailed, balanced) -> ReportTables:
    """The long-tailed runs' part of the report (``longtail.{csv,md,tex}``, ``longtail_vs_ratio.png``,
    ``recall_vs_training_shots.png``); its ``table`` and ``longtail`` are both the long-tail table."""
    from .. import plots

    table, metrics, runs = longtail_table(long_tailed, balanced)
    out = spec.tables_dir
    paths = write_tables(table, out, "longtail", metrics)
    panels = [m for m in LONGTAIL_PANELS if m in metrics]
    figures = {"longtail_vs_ratio": plots.accuracy_vs_ratio(
        table, panels, title=f"{spec.dataset}: long-tailed few-shot, accuracy per class group against the "
                             "imbalance ratio (mean ± 1 std over seeds)")}
    row_order = list(dict.fromkeys(table["row"]))  # one colour per method in every long-tail figure
    recall = per_class_frame(long_tailed, runs, row_order)
    if recall is not None:
        paths += plots.save_table(recall, out, "longtail_recall_vs_shots", formats=("csv",))
        figures["recall_vs_training_shots"] = plots.recall_vs_training_shots(
            recall, title=f"{spec.dataset}: per-class test recall against the class's training images "
                          "(mean over classes with those shots and over seeds)")
    paths += _separation(spec, long_tailed, row_order, "long_tail_ratio", "longtail_", figures, LONGTAIL_IGNORE)
    for name, fig in figures.items():
        paths += plots.save_figure(fig, out, name)
    return ReportTables(table, format_table(table, metrics), runs, figures, paths, _stale(long_tailed), table)


def per_class_frame(records, runs, row_order: Sequence[str] = ()):
    """Per-class recall against training images from the records' ``extra.per_class``: one row per
    table row, ratio and training-image count (``runs``: the per-run frame naming each run's ``row``
    and ``long_tail_ratio``; rows in ``row_order`` first), ``recall`` the mean over the classes with
    that count and over seeds, ``n`` how many (class, seed) pairs; ``None`` when no record has it
    (records made before it was recorded)."""
    import pandas as pd

    per_class = {r.run_id: r.extra.get("per_class") for r in records if (r.extra.get("per_class") or {}).get("recall")}
    rank = {row: i for i, row in enumerate(row_order)}
    have = runs[runs["run_id"].isin(per_class)]
    if have.empty:
        return None
    have = have.sort_values("row", key=lambda c: c.map(lambda row: rank.get(row, len(rank))), kind="stable")
    rows = [{"row": run.row, "method": run.method, "long_tail_ratio": run.long_tail_ratio, "shots": n, "recall": rec}
            for run in have.itertuples()
            for n, rec in zip(per_class[run.run_id]["shots"], per_class[run.run_id]["recall"]) if rec is not None]
    return (pd.DataFrame(rows).groupby(["row", "method", "long_tail_ratio", "shots"], sort=False)["recall"]
            .agg(recall="mean", n="size").reset_index())
