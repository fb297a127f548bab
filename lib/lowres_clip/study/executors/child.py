"""``python -m lowres_clip.study.executors run-job JOB.pkl ...``: one job of the local executor, in
its own process.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Sequence

from ...jobs import KERNEL_NAME, NOTEBOOKS_DIR
from .base import JobFailed, _run_notebook, environment_line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lowres_clip.study.executors run-job JOB.pkl ...``: one job of the local executor."""
    parser = argparse.ArgumentParser(prog="python -m lowres_clip.study.executors")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-job", help="execute one pickled study job (used by the local executor)")
    run.add_argument("job", type=Path)
    run.add_argument("--kernel", default=KERNEL_NAME)
    run.add_argument("--notebooks-dir", default=str(NOTEBOOKS_DIR))
    run.add_argument("--error-file", type=Path, default=None, help="where the one-line failure goes")
    args = parser.parse_args(argv)
    job = pickle.loads(args.job.read_bytes())
    print(environment_line(), flush=True)
    try:
        _run_notebook(job, args.kernel, args.notebooks_dir)
    except JobFailed as exc:
        if args.error_file:
            args.error_file.write_text(str(exc))
        return 1
    return 0
