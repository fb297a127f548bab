"""Committed results: publish run records, regenerate tables and the README block, find stale
records, and rerun any committed record to compare old and new numbers.

``python -m lowres_clip.results publish --dataset eurosat``
    copies every record of the dataset from ``runs/`` to ``figures/records/{run id}/record.json``
    (committed; no predictions or checkpoints), with the log of the study that made them.
``python -m lowres_clip.results render --dataset eurosat``
    regenerates ``figures/{dataset}/tables/`` and the README's results block (between the markers
    ``<!-- results:{dataset}:begin -->`` and ``<!-- results:{dataset}:end -->``) from the committed
    records alone; nothing in that block is typed by hand.
``python -m lowres_clip.results stale``
    lists committed records whose settings hash differs from what the current code resolves for the
    same command (profile, parameters, overrides), i.e. numbers this code would not produce.
``python -m lowres_clip.results reproduce [--methods zero_shot linear_probe ...]``
    reruns committed records into a temporary folder and prints old vs new; exits 1 on a
    difference beyond the tolerance: exact where this process has the record's numerics (CPU, ISA,
    threads, libraries; each rerun uses the recorded thread count), else the noise floor measured by
    ``benchmarks/noise_floor.py`` for the precision the run used. ``make reproduce`` reruns them all.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import registry
from .analysis.paired import Comparison, compare_rows
from .analysis.stats import reaches, verdict
from .config import RunConfig, parse_entry
from .registry import study_order
from .runs import Stale, load_records, stale_records  # noqa: F401 (re-exported)
from .spec import FIGURES_ROOT, RECORD_FILE, REPO, RUNS_ROOT, STUDY_LOGS, RunSpec, flatten, resolve_origin

RECORDS_ROOT = FIGURES_ROOT / "records"
README = REPO / "README.md"
BF16_TOLERANCE = 0.005  # absolute, on accuracies in [0, 1]: half a point (only without a measured floor)
NOISE_FLOOR = Path(__file__).resolve().parent / "resources" / "noise_floor.json"
EXACT_TOLERANCE = 1e-9
COMPARED = ("top1", "balanced")
GOAL_POINTS = 2.0  # "within 2 points of the linear probe"
README_SHOTS = (1, 4, 16)  # the README's table shows these K (all K: figures/{dataset}/tables/results.md)


# ----------------------------------------------------------------------------- publish
class UnloggedRecords(ValueError):
    """Records that no logged study invocation made: publishing them would name the wrong study."""


def study_logs(folder: Path) -> list[dict[str, Any]]:
    """The study logs under ``folder`` (``study-logs/*.json``, oldest first), each with its ``file``."""
    out = []
    for path in sorted((folder / STUDY_LOGS).glob("*.json")):
        log = json.loads(path.read_text())
        log["file"] = path.name
        out.append(log)
    return out


def publish(dataset: str, runs_root: Path = RUNS_ROOT, dest: Path = RECORDS_ROOT) -> list[Path]:
    """Replace the committed records of ``dataset`` by the records under ``runs_root``, with the
    logs of the study invocations that made them.

    Raises:
        UnloggedRecords: a record that no logged study invocation made (e.g. made by a notebook
            run by hand, or before study logs named their runs): the published study would not be
            the study that ran. Rerun them through ``python -m lowres_clip.study`` (``--force``).
    """
    records = load_records(runs_root, dataset)
    if not records:
        raise FileNotFoundError(f"no records of {dataset!r} under {runs_root}; run the study first.")
    logs = study_logs(runs_root / dataset)
    maker = {run: log for log in logs for run in log.get("runs", [])}  # the latest invocation that made it
    unlogged = [r.run_id for r in records if r.run_id not in maker]
    if unlogged:
        raise UnloggedRecords(
            f"{len(unlogged)} of {len(records)} records were not made by a logged study invocation "
            f"(e.g. {unlogged[0]}); rerun them with `python -m lowres_clip.study ... --force` before publishing.")
    shutil.rmtree(dest / dataset, ignore_errors=True)
    written = []
    for r in records:
        path = dest / r.run_id / RECORD_FILE
        r.save(path)
        written.append(path)
    used = {log["file"] for log in maker.values()}
    (dest / dataset / STUDY_LOGS).mkdir(parents=True, exist_ok=True)
    for name in sorted(used):
        shutil.copy(runs_root / dataset / STUDY_LOGS / name, dest / dataset / STUDY_LOGS / name)
    return written


# ----------------------------------------------------------------------------- render
def _pct(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def results_block(dataset: str, records, table, logs: list[dict[str, Any]], stale: list[Stale],
                  figure: str | None = None) -> str:
    """The README's results block (Markdown) built from records and their aggregate.

    The table shows the K in :data:`README_SHOTS` (every K when the study has none of them), mean ±
    std over seeds; ``figure`` (a path relative to the README) is embedded above it. Computed from the
    table: the best method per K, the largest seed spread, and the goal at the largest K (each
    method's mean within :data:`GOAL_POINTS` of the linear probe's)."""
    commits = sorted({r.commit for r in records})
    dates = sorted(dt.datetime.fromtimestamp(r.created, dt.timezone.utc).strftime("%Y-%m-%d") for r in records)
    machines = sorted({f"{r.machine.get('cpu', '?')}, {r.machine.get('cores', '?')} cores" for r in records})
    lines = [
        f"Generated by `python -m lowres_clip.results render --dataset {dataset}` from the {len(records)} "
        f"committed records in `figures/records/{dataset}/` (made {dates[0]}"
        + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
        + f" at commit {', '.join(c[:10] for c in commits)} on {'; '.join(machines)}). Do not edit by hand.",
    ]
    made = {r.identity.get("run_id") for r in records}
    for log in logs:
        load = log.get("load_average")
        where = f", {log['executor']}" if log.get("executor") else ""
        runs = len(made & set(log.get("runs", [])))
        lines.append(f"Made {runs} of them: `{log.get('command', '?')}` (log `figures/records/{dataset}/{STUDY_LOGS}/"
                     f"{log['file']}`), {log.get('ran', '?')} notebooks ran, {log.get('skipped', '?')} skipped, "
                     f"{log.get('failed', '?')} failed, wall time {log.get('seconds', 0) / 60:.1f} min "
                     f"({log.get('date', '?')}{where}" + (f"; load average at the end {load}" if load else "") + ").")
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
                line += f" ({cmp.cell()} vs the linear probe: {_verdict_words(cmp)})"
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


def _verdict_words(cmp: Comparison) -> str:
    """What a reading may say of a comparison with the linear probe (:func:`~lowres_clip.analysis.stats.verdict`)."""
    return {"better": "better", "worse": "worse", "no difference shown": "no difference shown"}[verdict(cmp.interval())]


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
    """Tables and figures under ``figures/{dataset}/tables/`` and the README block, from committed records."""
    from .pipeline.report import report_tables

    records = load_records(records_root, dataset)
    if not records:
        raise FileNotFoundError(f"no committed records of {dataset!r} under {records_root}; publish some first.")
    spec = RunSpec(RunConfig(dataset=dataset, figures_root=str(figures_root)))
    report = report_tables(spec, records=records, plotly_js="cdn")
    logs = study_logs(records_root / dataset)
    stale = report.stale
    curve = next((p for p in report.paths if Path(p).name == "top1_vs_shots.png"), None)
    figure = _relative(Path(curve), readme.parent) if curve else None
    block = results_block(dataset, records, report.table, logs, stale, figure)
    readme.write_text(replace_block(readme.read_text(), dataset, block))
    return {"records": len(records), "stale": stale, "paths": report.paths, "block": block}


# ----------------------------------------------------------------------------- reproduce
@dataclass
class Reproduction:
    """One committed record rerun: old and new metrics, tolerance (and why), verdict."""

    run_id: str
    old: dict[str, float]
    new: dict[str, float]
    tolerance: float
    reason: str = "exact"

    @property
    def ok(self) -> bool:
        return all(abs(self.new[m] - self.old[m]) <= self.tolerance for m in COMPARED if m in self.old)

    def line(self) -> str:
        parts = [f"{m} {100 * self.old[m]:.2f} -> {100 * self.new[m]:.2f}" for m in COMPARED if m in self.old]
        tol = "exact" if self.tolerance <= EXACT_TOLERANCE else f"tolerance {100 * self.tolerance:g} points"
        return f"{'ok  ' if self.ok else 'DIFF'} {self.run_id}: " + ", ".join(parts) + f" ({tol}: {self.reason})"


def precision_used(record) -> str:
    """``fp32``, ``bf16`` or ``fp16``: the lowest precision a record's run trained or evaluated in
    (``protocol["precision"]``; records without it: what the loop reported in ``extra["train"]``)."""
    used = record.protocol.get("precision")
    names = [v for v in used.values() if v] if isinstance(used, dict) else []
    if not names:
        names = [str(record.extra.get("train", {}).get("precision", "fp32"))]
    names = ["bf16" if n in ("bf16", "bfloat16") else "fp16" if n in ("fp16", "float16") else "fp32" for n in names]
    return "fp16" if "fp16" in names else "bf16" if "bf16" in names else "fp32"


def noise_floor() -> dict[str, Any]:
    """The measured reproduction tolerances (``resources/noise_floor.json``, written by
    ``benchmarks/noise_floor.py``): per precision, the largest top-1 / balanced difference seen
    between runs that differ only in thread count or instruction set."""
    return json.loads(NOISE_FLOOR.read_text()) if NOISE_FLOOR.is_file() else {}


def tolerance_of(record, current: dict[str, Any] | None = None) -> tuple[float, str]:
    """The tolerance a rerun of ``record`` is held to here, and why.

    Exact when this process has the record's numerics (CPU model, ISA flags, thread count, torch,
    oneDNN and MKL versions, ATen dispatch, numeric environment: :func:`lowres_clip.numerics.
    numerics_differences`); otherwise the noise floor measured for the precision the run used
    (:func:`noise_floor`), and :data:`BF16_TOLERANCE` for a precision the floor has no value for."""
    from .numerics import numerics_differences

    differences = numerics_differences(record.machine, current)
    if not differences:
        return EXACT_TOLERANCE, "same machine, threads and libraries"
    precision = precision_used(record)
    floor = noise_floor().get(precision)
    where = "; ".join(differences)
    if floor:
        return float(floor["tolerance"]), f"{precision} noise floor of {floor['measured']} ({where})"
    return BF16_TOLERANCE, f"{precision}: no measured floor, default ({where})"


def reproduce(records, workdir: Path | None = None, log=print) -> list[Reproduction]:
    """Rerun each record's command with the current code into ``workdir`` and compare the metrics.

    Each rerun uses the thread count its record was made with, so a rerun on the machine that made
    the record is bit-identical; the tolerance is :func:`tolerance_of`."""
    from .numerics import using_threads
    from .pipeline import run_method

    workdir = Path(workdir or tempfile.mkdtemp(prefix="lowres-clip-reproduce-"))
    out = []
    for r in records:
        spec = resolve_origin(r.identity["origin"], runs_root=str(workdir / "runs"), figures_root=str(workdir / "figures"))
        with using_threads(r.machine.get("threads")):
            new, _ = run_method(spec)
            tolerance, reason = tolerance_of(r)
        rep = Reproduction(r.run_id, {m: r.metrics[m] for m in COMPARED if m in r.metrics},
                           {m: new.metrics[m] for m in COMPARED if m in new.metrics}, tolerance, reason)
        log(rep.line())
        out.append(rep)
    return out


def select(records, methods: Sequence[str] | None = None, shots: Sequence[int] | None = None,
           seeds: Sequence[int] | None = None):
    """Records of the given method labels or grid entries, K and seeds (all when ``None``).

    A plain label selects every record of that label; an entry with settings of its own
    (``meta_adapter[meta_adapter.budget=run]``) only the records whose config holds them (a key a
    record's config lacks reads as the current default: fields added later default to what the
    code did before them)."""
    entries = [parse_entry(m) for m in methods] if methods else None
    defaults = flatten(RunConfig().to_dict())

    def chosen(r) -> bool:
        if entries is None:
            return True
        config = {**defaults, **flatten(r.config)}
        return any(r.identity["method"] == e.label and all(config.get(k) == v for k, v in e.settings) for e in entries)

    return [r for r in records
            if chosen(r) and (shots is None or r.identity["shots"] in shots) and (seeds is None or r.identity["seed"] in seeds)]


# ----------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lowres_clip.results {publish,render,stale,reproduce}`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m lowres_clip.results", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("publish", "render", "stale", "reproduce"):
        p = sub.add_parser(name)
        p.add_argument("--dataset", default="eurosat")
        p.add_argument("--records-root", default=str(RECORDS_ROOT))
        if name == "publish":
            p.add_argument("--runs-root", default=str(RUNS_ROOT))
        if name == "reproduce":
            p.add_argument("--methods", nargs="+", default=None)
            p.add_argument("--shots", nargs="+", type=int, default=None)
            p.add_argument("--seeds", nargs="+", type=int, default=None)
            p.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    root = Path(args.records_root)
    if args.cmd == "publish":
        paths = publish(args.dataset, Path(args.runs_root), root)
        print(f"published {len(paths)} records to {root / args.dataset}")
        return 0
    if args.cmd == "render":
        done = render(args.dataset, root)
        print(f"rendered {done['records']} records: README block and {len(done['paths'])} table/figure files; "
              f"{len(done['stale'])} stale")
        return 0
    records = load_records(root, args.dataset)
    if args.cmd == "stale":
        stale = stale_records(records)
        for s in stale:
            print(f"STALE {s.run_id}: {s.reason} (stored {s.stored_hash}, current {s.current_hash})")
        print(f"{len(stale)} of {len(records)} committed records are stale")
        return 1 if stale else 0
    chosen = select(records, args.methods, args.shots, args.seeds)
    if not chosen:
        print("no committed record matches", file=sys.stderr)
        return 2
    reps = reproduce(chosen, Path(args.workdir) if args.workdir else None)
    bad = [r for r in reps if not r.ok]
    print(f"reproduced {len(reps) - len(bad)} of {len(reps)} records within tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
