"""``python -m lowres_clip.results {publish,render,stale,reproduce}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..runs import load_records, stale_records
from ..spec import RUNS_ROOT
from .publishing import RECORDS_ROOT, publish
from .rendering import render
from .reproduction import reproduce, select


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
