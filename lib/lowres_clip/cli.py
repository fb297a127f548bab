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
    """``check-data``: the preflight's data checks (files, class folders, labels, decoded images)."""
    from .spec import default_cache_root
    from .preflight import check_dataset, model_problems

    kwargs = {"resplit": True} if args.resplit else {}
    if args.resplit and not args.dataset.startswith(datasets.IMAGEFOLDER_PREFIX):
        print("error: --resplit applies to imagefolder:<path> datasets only.", file=sys.stderr)
        return 2
    cache = Path(args.cache_root) if args.cache_root else default_cache_root()
    check = check_dataset(args.dataset, args.root, args.exclude, cache, verify=not args.no_verify, **kwargs)
    problems = list(check.problems)
    if args.model:
        problems += model_problems(args.model, args.weights)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    for n in check.notes:
        print(f"note: {n}")
    ds = check.dataset
    if ds is not None and not problems:
        print(json.dumps({"dataset": ds.name, "image_root": str(ds.image_root), "classes": ds.num_classes,
                          **{s: len(v) for s, v in ds.splits.items()}, "excluded": len(ds.excluded),
                          "images_decoded": not args.no_verify}, indent=1))
    return 2 if problems else 0


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
    p = sub.add_parser("check-data", help="check a dataset (files, class folders, labels, every image decoded); "
                                          "print its split sizes, or one line per problem")
    p.add_argument("dataset", help="eurosat, circuits or imagefolder:<path>")
    p.add_argument("--root", default=None, help="data root (default: $LOWRES_CLIP_DATA or ../shared/data)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PATH",
                   help="image paths (relative to the image root) to leave out, as RunConfig.exclude")
    p.add_argument("--no-verify", action="store_true", help="only check that the files exist; do not decode them")
    p.add_argument("--resplit", action="store_true",
                   help="ImageFolder: draw and save a new split (after classes or files changed)")
    p.add_argument("--cache-root", default=None, help="where verified images are remembered")
    p.add_argument("--model", default=None, help="also check an open_clip model name (loads nothing)")
    p.add_argument("--weights", default="random", help="with --model: the weights tag or checkpoint file")
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
