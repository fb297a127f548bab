"""Command line: ``python -m lowres_clip.cli {download,build-embedded,strip-notebooks,check-data}``.

The study itself runs with ``python -m lowres_clip.study`` (see :mod:`lowres_clip.study`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import datasets


def _download(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.dataset == "eurosat":
        dest = datasets.download_eurosat(root)
        print(f"EuroSAT ready in {dest}")
        return 0
    print(datasets.circuits_instructions(root / "circuits"))
    return 1


def _check_data(args: argparse.Namespace) -> int:
    ds = datasets.load_dataset(args.dataset, args.root)
    print(json.dumps({"dataset": ds.name, "image_root": str(ds.image_root), "classes": ds.num_classes,
                      **{s: len(v) for s, v in ds.splits.items()}}, indent=1))
    return 0


def _build_embedded(args: argparse.Namespace) -> int:
    from . import embedded

    path = embedded.build_embedded(force=args.force)
    print(f"embedded model {embedded.EMBEDDED_MODEL} cached at {path}")
    print(embedded.EMBEDDED_CAVEAT)
    return 0


def strip_notebook(path: str | Path) -> bool:
    """Remove outputs and execution counts from a notebook in place; True if it changed."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, str(path))
    return changed


def _strip(args: argparse.Namespace) -> int:
    for p in args.paths:
        if strip_notebook(p):
            print(f"stripped {p}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lowres-clip", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("download", help="download a dataset (EuroSAT) or print where to put it (Circuits)")
    p.add_argument("dataset", choices=["eurosat", "circuits"])
    p.add_argument("--root", default=str(datasets.default_data_root()))
    p.set_defaults(func=_download)
    p = sub.add_parser("check-data", help="load a dataset and print its split sizes")
    p.add_argument("dataset")
    p.add_argument("--root", default=None)
    p.set_defaults(func=_check_data)
    p = sub.add_parser("build-embedded", help="build and cache the embedded CPU CLIP model")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_build_embedded)
    p = sub.add_parser("strip-notebooks", help="remove outputs from notebooks")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=_strip)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except datasets.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
