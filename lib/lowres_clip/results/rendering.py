"""Rendering committed records: the tables under ``figures/{dataset}/tables/`` and the README's results block, every comparison with its paired interval."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from .. import registry
from ..analysis.paired import Comparison, compare_rows
from ..analysis.stats import reaches, verdict
from ..config import RunConfig
from ..registry import study_order
from ..runs import Stale, load_records, split_long_tail
from ..spec import FIGURES_ROOT, REPO, STUDY_LOGS, RunSpec
from .publishing import RECORDS_ROOT, study_logs

README = REPO / "README.md"
GOAL_POINTS = 2.0  # "within 2 points of the linear probe"
README_SHOTS = (1, 4, 16)  # the README's table shows these K (all K: figures/{dataset}/tables/results.md)


def _pct(mean: float, std: float, n: int, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` (the mean alone for one seed; ``-`` when missing), in percent by default."""
    if mean is None or mean != mean:
        return "-"
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if n > 1 else "")


def results_block(dataset: str, records, table, logs: list[dict[str, Any]], stale: list[Stale],
                  figure: str | None = None) -> str:
    """The README's results block (Markdown) built from records and their aggregate.

    The table shows the K in :data:`README_SHOTS` (every K when the study has none of them), mean ±
    std over seeds; ``figure`` (a path relative to the README) is embedded above it. Computed from the
    table: the best method per K, the largest seed spread, and the goal at the largest K (each
    method's mean within :data:`GOAL_POINTS` of the linear probe's)."""
    lines = _provenance(dataset, records, logs)
    if stale:
        lines.append(f"**{len(stale)} of these records are stale** (the current code resolves other settings for "
                     "their command): " + ", ".join(s.run_id for s in stale[:5]) + ".")
    if figure:
        lines += ["", f"![test top-1 against shots, mean ± 1 std over seeds]({figure})"]
    order = {m: i for i, m in enumerate(study_order(table["method"]))}
    table = table.sort_values(["shots", "method", "setting"], key=lambda c: c.map(order) if c.name == "method" else c)
    probe = {k: row for k, row in table[table["method"] == registry.GOAL_BASELINE].set_index("shots").iterrows()}
    all_shots = sorted(table["shots"].unique())
    shown = [k for k in all_shots if k in README_SHOTS] or all_shots
    lines += ["", f"Test top-1 and balanced accuracy (%, mean ± std over seeds) for K in {{{', '.join(map(str, shown))}}}"
              + (f"; every K in `figures/{dataset}/tables/results.md`." if shown != all_shots else "."), "",
              "| K | method | test top-1 (%) | balanced (%) | top-1 vs linear probe, 95 % interval | n seeds | selection | train s | eval s |",
              "|---|---|---|---|---|---|---|---|---|"]
    timings = _mean_timings(records)

    def versus(row, ref) -> Comparison | None:
        """``row`` minus the reference row, paired over their seeds (and test images)."""
        return None if ref is None or ref["group_hash"] == row["group_hash"] else compare_rows(
            records, row["group_hash"], ref["group_hash"])

    for _, row in table[table["shots"].isin(shown)].iterrows():
        ref = probe.get(row["shots"])
        cmp = versus(row, ref)
        diff = "" if cmp is None else cmp.cell()
        t = timings.get(row["group_hash"], {})
        lines.append(f"| {row['shots']} | {row['row']} | {_pct(row['top1_mean'], row['top1_std'], row['n_seeds'])} | "
                     f"{_pct(row['balanced_mean'], row['balanced_std'], row['n_seeds'])} | {diff} | {row['n_seeds']} | "
                     f"{_text(row['selection'])} | {t.get('train', 0):.0f} | {t.get('eval', 0):.0f} |")
    lines += ["", "Computed from the table (every K):", ""]
    for k in all_shots:
        at_k = table[table["shots"] == k].sort_values("top1_mean", ascending=False)
        top = at_k.iloc[0]
        ref = probe.get(k)
        best = at_k[~at_k["method"].isin(registry.references())]
        line = f"* K={k}: best {top['row']} {_pct(top['top1_mean'], top['top1_std'], top['n_seeds'])}"
        if ref is not None and len(best) and best.iloc[0]["row"] != top["row"]:
            b = best.iloc[0]
            cmp = versus(b, ref)
            line += f"; best adapted method {b['row']} {_pct(b['top1_mean'], b['top1_std'], b['n_seeds'])}"
            if cmp is not None:
                line += f" ({cmp.cell()} vs the linear probe: {verdict(cmp.interval())})"
        lines.append(line)
    multi = table[table["n_seeds"] > 1]
    if len(multi):
        wide = multi.sort_values("top1_std", ascending=False).iloc[0]
        lines.append(f"* Largest seed spread: {wide['row']} at K={wide['shots']} (std {100 * wide['top1_std']:.2f} "
                     f"points over {wide['n_seeds']} seeds)")
    goal_k = all_shots[-1]
    goals = []
    for _, row in table[table["shots"] == goal_k].iterrows():
        ref = probe.get(goal_k)
        if ref is not None and not registry.is_reference(row["method"]):
            cmp = versus(row, ref)
            if cmp is None:
                continue
            said = reaches(cmp.interval(), GOAL_POINTS / 100)
            words = {"reaches": "reaches the goal", "falls short": "misses the goal",
                     "not shown": "neither reaching nor missing the goal is shown"}[said]
            goals.append(f"{row['row']}: {cmp.cell()} points vs the linear probe: {words}")
    if goals:
        lines += ["", f"Against the goal at K={goal_k}: within {GOAL_POINTS:g} points of the linear probe or above it. "
                  "A method *reaches* it only when the lower end of its 95 % interval (paired over seeds; with "
                  "one seed, a paired bootstrap over the test images) is above -"
                  f"{GOAL_POINTS:g}, and *misses* it only when the upper end is below:", ""]
        lines += [f"* {g}" for g in goals]
        missed = table[(table["shots"] == goal_k) & ~table["method"].isin(registry.references())]
        missed = missed[100 * (missed["top1_mean"] - probe[goal_k]["top1_mean"]) < -GOAL_POINTS]
        lora = table[(table["shots"] == goal_k) & (table["method"] == registry.TRAINED_BASELINE)]
        ref = _training_facts([r for r in records if r.identity["group_hash"] in set(lora["group_hash"])])
        notes = []
        for _, row in missed.iterrows():
            facts = _training_facts([r for r in records if r.identity["group_hash"] == row["group_hash"]])
            if facts:
                notes.append(f"{row['row']}: {_describe_facts(facts)}"
                             + (f" ({registry.TRAINED_BASELINE}: {_describe_facts(ref)})"
                                if ref and row["method"] != registry.TRAINED_BASELINE else ""))
        if notes:
            lines += ["", f"What the records say of the rows whose mean is more than {GOAL_POINTS:g} points below the "
                      f"linear probe (K={goal_k}, mean over seeds):", ""]
            lines += [f"* {n}" for n in notes]
    return "\n".join(lines)


def _provenance(dataset: str, records, logs: list[dict[str, Any]]) -> list[str]:
    """A block's first lines: how many committed records, when, at which commits, on which machines,
    and each study invocation that made some of them (its command, log, counts and wall time)."""
    commits = sorted({r.commit for r in records})
    dates = sorted(dt.datetime.fromtimestamp(r.created, dt.timezone.utc).strftime("%Y-%m-%d") for r in records)
    machines = sorted({f"{r.machine.get('cpu', '?')}, {r.machine.get('cores', '?')} cores"
                       + (", AMX + AVX512-BF16" if "amx_bf16" in (r.machine.get("isa") or []) else "") for r in records})
    lines = [
        f"Generated by `python -m lowres_clip.results render --dataset {dataset}` from the {len(records)} "
        f"committed records in `figures/records/{dataset}/` (made {dates[0]}"
        + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
        + f" at commit {', '.join(c[:10] for c in commits)} on {'; '.join(machines)}). Do not edit by hand.",
    ]
    made = {r.identity.get("run_id") for r in records}
    for log in logs:
        runs = len(made & set(log.get("runs", [])))
        if not runs:
            continue
        load = log.get("load_average")
        where = f", {log['executor']}" if log.get("executor") else ""
        lines.append(f"Made {runs} of them: `{log.get('command', '?')}` (log `figures/records/{dataset}/{STUDY_LOGS}/"
                     f"{log['file']}`), {log.get('ran', '?')} notebooks ran, {log.get('skipped', '?')} skipped, "
                     f"{log.get('failed', '?')} failed, wall time {log.get('seconds', 0) / 60:.1f} min "
                     f"({log.get('date', '?')}{where}" + (f"; load average at the end {load}" if load else "") + ").")
    return lines


def longtail_block(dataset: str, records, balanced, table, logs: list[dict[str, Any]], figure: str | None = None) -> str:
    """The README's long-tail block (Markdown): per imbalance ratio and method, balanced and head /
    medium / tail accuracy, prediction collapse and the modality gap (mean over seeds ± std), then
    every remedy row against the same method without its remedies at the same ratio (``lora+la``
    against ``lora``), paired over seeds (one seed: a bootstrap over the test images), with its reading.

    ``records`` are the long-tailed records, ``balanced`` the balanced ones the table's ratio-1 rows
    come from, ``table`` :func:`lowres_clip.pipeline.report.longtail_table`'s aggregate."""
    ones = [r for r in balanced if r.identity["group_hash"] in set(table["group_hash"])]
    lines = _provenance(dataset, records, logs)
    if ones:
        lines.append(f"Ratio 1 is the balanced grid's K={sorted({r.identity['shots'] for r in ones})[-1]} "
                     f"({len(ones)} of the records of the block above).")
    if figure:
        lines += ["", f"![accuracy per class group against the imbalance ratio, mean ± 1 std over seeds]({figure})"]
    head = ("| ratio | method | balanced (%) | head (%) | medium (%) | tail (%) | most-predicted class's share (%) "
            "| matched image-text cosine | n seeds |")
    k = ", ".join(str(v) for v in sorted(set(table["shots"])))
    lines += ["", f"Long-tailed few-shot {dataset}: head K={k} shots, per-class shots decaying geometrically to "
              "K / ratio (`lowres_clip.sampling.long_tail_profile`); head / medium / tail are the first, second and "
              "last third of the classes ranked by shots; every run tested on the dataset's whole test split. "
              "Mean ± std over seeds:", "", head, "|" + "---|" * (head.count("|") - 1)]

    def cell(row, metric: str, scale: float = 100.0, digits: int = 2) -> str:
        return _pct(row.get(f"{metric}_mean"), row.get(f"{metric}_std"), row["n_seeds"], scale, digits)

    for _, row in table.sort_values("long_tail_ratio", kind="stable").iterrows():
        lines.append(f"| {row['long_tail_ratio']:g} | {row['row']} | {cell(row, 'balanced')} | {cell(row, 'top1_head')} | "
                     f"{cell(row, 'top1_medium')} | {cell(row, 'top1_tail')} | {cell(row, 'collapse_top_share')} | "
                     f"{cell(row, 'gap_matched_mean', 1.0, 3)} | {row['n_seeds']} |")
    everything = [*records, *ones]
    facts, readings = [], []
    for ratio, at in table[table["long_tail_ratio"] > 1].groupby("long_tail_ratio", sort=True):
        best = at.sort_values("balanced_mean", ascending=False).iloc[0]
        line = f"* ratio {ratio:g}: best balanced accuracy {best['row']} {cell(best, 'balanced')}"
        if {"top1_head_mean", "top1_tail_mean"} <= set(at.columns):
            gaps = [f"{row['row']} {100 * (row['top1_head_mean'] - row['top1_tail_mean']):.1f}" for _, row in at.iterrows()
                    if row["top1_head_mean"] == row["top1_head_mean"] and row["top1_tail_mean"] == row["top1_tail_mean"]]
            line += "; head minus tail top-1 (points): " + ", ".join(gaps)
        facts.append(line)
        for _, row in at.iterrows():
            base = at[(at["method"] == _without_remedies(row["method"])) & (at["setting"] == row["setting"])]
            if row["method"] == _without_remedies(row["method"]) or base.empty:
                continue  # not a remedy row, or its method has no row of its own here
            base = base.iloc[0]
            said = []
            for metric, words in (("top1", "top-1"), ("top1_tail", "tail top-1")):
                cmp = compare_rows(everything, row["group_hash"], base["group_hash"], metric=metric)
                if cmp is not None:
                    images = cmp.over_images if cmp.over_images is not None and cmp.interval() is not cmp.over_images else None
                    said.append(f"{words} {cmp.cell()}" + (f" (over test images: {images.format()})" if images else "")
                                + f": {verdict(cmp.interval())}")
            readings.append(f"* ratio {ratio:g}, {row['row']} vs {base['row']}: " + "; ".join(said))
    if facts:
        lines += ["", "Computed from the table:", "", *facts]
    if readings:
        lines += ["", "Each remedy against the same method without it, at the same ratio (points, A minus B, 95 % "
                  "interval: over seeds, or with one seed a paired bootstrap over the test images for top-1; the reading "
                  "is judged by that interval and says better or worse only when it excludes 0; for top-1 the bootstrap "
                  "over the test images of the same seeds is printed beside it, which leaves out the seed-to-seed spread):", ""]
        lines += readings
    return "\n".join(lines)


def _without_remedies(method: str) -> str:
    """A method label less its long-tail remedies (``lora+la`` -> ``lora``; augmented labels as they are)."""
    label = registry.parse_label(method)
    if label.augmented:
        return method
    return "+".join(p for p in label.parts if not registry.is_remedy(p)) or method


def _training_facts(records) -> dict[str, float]:
    """Mean over ``records`` of the trained parameter count, the last logged training loss and the
    validation accuracy before training and at the selected step (empty without training history)."""
    rows = []
    for r in records:
        hist = (r.extra.get("train") or {}).get("history") or []
        losses = [h["loss"] for h in hist if h.get("loss") == h.get("loss") and h.get("loss") is not None]
        if not hist or not losses:
            continue
        rows.append({"params": float((r.extra.get("parameter_counts") or {}).get("total", float("nan"))),
                     "loss": float(losses[-1]), "val0": float(hist[0]["val"]),
                     "val": float(r.metrics.get("val_top1", hist[-1]["val"]))})
    return {k: sum(d[k] for d in rows) / len(rows) for k in rows[0]} if rows else {}


def _describe_facts(f: dict[str, float]) -> str:
    return (f"{f['params']:,.0f} trained parameters, last training loss {f['loss']:.3f}, validation "
            f"{100 * f['val0']:.1f}% before training and {100 * f['val']:.1f}% after")


def _text(value: Any) -> str:
    """A table cell: ``-`` for missing values (``None`` / NaN)."""
    return "-" if value is None or value != value else str(value)


def _mean_timings(records) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, list[float]]] = {}
    for r in records:
        d = out.setdefault(r.identity["group_hash"], {})
        for k in ("train", "eval", "total"):
            d.setdefault(k, []).append(float(r.timings.get(k, 0.0)))
    return {g: {k: sum(v) / len(v) for k, v in d.items()} for g, d in out.items()}


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (POSIX), for a link in the README."""
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def replace_block(text: str, dataset: str, block: str) -> str:
    """``text`` with the block between the dataset's results markers replaced (markers must exist)."""
    begin, end = f"<!-- results:{dataset}:begin -->", f"<!-- results:{dataset}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"README has no {begin} ... {end} markers; add them where the results go.")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def render(dataset: str, records_root: Path = RECORDS_ROOT, readme: Path = README,
           figures_root: Path = FIGURES_ROOT) -> dict[str, Any]:
    """Tables and figures under ``figures/{dataset}/tables/`` and the README blocks, from committed
    records: the balanced study's (markers ``results:{dataset}``) and, when there are long-tailed
    records, the long-tail block (markers ``results:{dataset}-longtail``)."""
    from ..pipeline.report import report_tables

    records = load_records(records_root, dataset)
    if not records:
        raise FileNotFoundError(f"no committed records of {dataset!r} under {records_root}; publish some first.")
    spec = RunSpec(RunConfig(dataset=dataset, figures_root=str(figures_root)))
    report = report_tables(spec, records=records, plotly_js="cdn")
    logs = study_logs(records_root / dataset)
    stale = report.stale
    balanced, long_tailed = split_long_tail(records)

    def figure(name: str) -> str | None:
        path = next((p for p in report.paths if Path(p).name == name), None)
        return _relative(Path(path), readme.parent) if path else None

    text = readme.read_text()
    block = results_block(dataset, balanced, report.table, logs, stale, figure("top1_vs_shots.png")) if balanced else ""
    if balanced:
        text = replace_block(text, dataset, block)
    lt_block = ""
    if long_tailed:
        lt_block = longtail_block(dataset, long_tailed, balanced, report.longtail, logs, figure("longtail_vs_ratio.png"))
        text = replace_block(text, f"{dataset}-longtail", lt_block)
    readme.write_text(text)
    return {"records": len(records), "stale": stale, "paths": report.paths, "block": block, "longtail_block": lt_block}
