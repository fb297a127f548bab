"""The steps the numbered notebooks run, as plain functions over a :class:`~lowres_clip.spec.RunSpec`
(no logic lives only in a notebook).

==========================  =========================  ==============================================
notebook                    module                     step
==========================  =========================  ==============================================
00_data                     :mod:`.data`               :func:`prepare_data`, :func:`data_overview`
01_zero_shot .. 04, 06      :mod:`.run`                :func:`run_method` (``zero_shot``, ``linear_probe``,
                                                       ``lora``, ``bitfit``, ``meta_adapter``, combinations,
                                                       augmented labels)
05_augment_generate         :mod:`.augment`            :func:`generate_augmentations`
07_failure_analysis         :mod:`.failure`            :func:`failure_analysis`, :func:`failure_browser`
08_report_tables            :mod:`.report`             :func:`report_tables`
==========================  =========================  ==============================================

Shared helpers (data root, model, feature cache, caveats, timings) are in :mod:`.common`. A run
writes only into its own folder :attr:`RunSpec.run_dir` (named by its settings): ``checkpoint.pt``
(trained methods), ``predictions.npz`` and, last and atomically, ``record.json``. Its figures go to
:attr:`RunSpec.figure_dir`.
"""

from .augment import Augmentations, augmentation_dir, generate_all, generate_augmentations
from .common import caveats, describe, feature_cache, load_model, print_caveats, resolve_data_root, test_samples
from .data import DataOverview, class_counts, data_overview, data_overviews, prepare_data
from .failure import FailureReport, attention_source, failure_analysis, failure_browser
from .report import ReportTables, report_tables
from .run import GridResults, cell_results, ensure_run, load_run, run_all, run_figures, run_method, run_summary

__all__ = [
    "Augmentations", "DataOverview", "GridResults", "data_overviews", "generate_all", "run_all", "FailureReport", "ReportTables", "attention_source", "augmentation_dir",
    "caveats", "cell_results", "class_counts", "data_overview", "describe", "ensure_run", "failure_analysis",
    "failure_browser", "feature_cache", "generate_augmentations", "load_model", "load_run", "prepare_data",
    "print_caveats", "report_tables", "resolve_data_root", "run_figures", "run_method", "run_summary",
    "test_samples",
]
