"""Rerun the whole study headless: the numbered notebooks over a profile's grid, with papermill.

``python -m lowres_clip.study --profile cpu --dataset eurosat [--force] [--data-root DIR] [--executor slurm ...]``

For one dataset and every (K, seed) of the profile's grid it executes, in order:

1. ``00_data`` (sample and save the K-shot split, class counts, examples);
2. ``05_augment_generate`` for each augmentation kind the grid's methods use (``lora+aug-classic``);
3. one notebook per method label: ``01_zero_shot`` (``zero_shot`` and the ``linear_probe`` baseline),
   ``02_lora`` (``lora`` and every combination containing LoRA), ``03_bitfit`` (``bitfit`` and
   ``bitfit+meta_adapter``), ``04_meta_adapter``, ``06_augment_train`` (labels with ``+aug-...``);
   a grid entry with settings of its own (``meta_adapter[meta_adapter.budget=run]``,
   :class:`~lowres_clip.config.GridEntry`) runs its label's notebook with them, beside the plain label;
4. ``07_failure_analysis`` for each of the grid's ``failure_pairs``;

then ``08_report_tables`` once, which aggregates every finished run of the dataset over seeds
(mean ± std) into ``figures/{dataset}/tables/`` as CSV, Markdown and LaTeX.

Executed notebooks go to ``runs/notebooks/{run id}/`` (git-ignored). A run finished with the same
settings (:meth:`lowres_clip.spec.RunSpec.is_finished`: a record with the same settings hash) is
skipped unless ``--force``; a run whose settings changed is a new run in its own folder. So are ``00_data`` and
``05_augment_generate`` once every run needing them is finished (and the data figures exist), and
``07_failure_analysis`` when its summary exists and neither of its two runs ran again. A failing notebook is
reported at the end and the others go on (notebooks depending on it are reported as failed without
running); the exit code is 1 if anything failed. Every run's configuration and every notebook
parameter is validated before the first notebook starts, so a typo fails at once, naming the key.

Executors (:mod:`lowres_clip.study.executors`, ``--executor``): ``sequential`` (default), ``local``
(``--workers N`` notebooks in parallel on this machine, one GPU each) or ``slurm`` (one Slurm job per
notebook, the dependencies as Slurm dependencies; resources from ``--slurm-*`` or the profile's
``cluster:`` section). Skipping, ``--force`` and the failure report are the same for all three;
``--dry-run`` prints what would run or be submitted, with the executor and its resources.
``--jobs-per method | method-seed | run`` cuts the grid into notebook executions (defaults: ``method``
sequentially, ``method-seed`` on local workers, ``run`` on Slurm; :func:`plan_study`). The ``cpu``
profile runs on two local workers of one CPU thread each (its ``cluster:`` section).

Kernel: notebooks run on the Jupyter kernel ``python3`` (``--kernel``). Started from this
interpreter, jupyter_client maps the ``python3`` kernel spec to ``sys.executable``, i.e. the
project's virtualenv. If no such kernel spec exists, :func:`ensure_kernel` installs the
virtualenv's own (``python -m ipykernel install --sys-prefix``).

Modules: ``planner.py`` (:func:`plan_study`), ``runner.py`` (:func:`run_study`), ``log.py`` (the study
log: :func:`write_log`, :func:`made_runs`), ``kernel.py`` (the Jupyter kernel, notebook parameters),
``cli.py`` (the command line, :func:`main`; ``__main__.py``), ``executors/`` (where the notebooks
run: ``sequential.py``, ``local.py`` with ``gpu.py``, ``slurm.py``, their shared ``base.py``,
``choose.py``, and ``child.py``, a local worker's process).
"""

from __future__ import annotations

from ..config import PROFILES_DIR
from ..jobs import KERNEL_NAME, NOTEBOOKS_DIR, Job, StudyError, StudyResult, error_message, execute, should_skip
from ..registry import (
    NB_AUG_GENERATE, NB_AUG_TRAIN, NB_BITFIT, NB_DATA, NB_FAILURE, NB_LORA, NB_META, NB_REPORT, NB_ZERO_SHOT, NOTEBOOKS,
)
from .cli import main
from .kernel import ensure_kernel, notebook_parameters
from .log import made_runs, write_log
from .planner import JOBS_PER, RUN_FIELDS, notebook_for, plan_study
from .runner import DEFAULT_JOBS_PER, run_study

__all__ = [
    "DEFAULT_JOBS_PER", "ensure_kernel", "error_message", "execute", "Job", "JOBS_PER", "KERNEL_NAME", "made_runs",
    "main", "NB_AUG_GENERATE", "NB_AUG_TRAIN", "NB_BITFIT", "NB_DATA", "NB_FAILURE", "NB_LORA", "NB_META", "NB_REPORT",
    "NB_ZERO_SHOT", "notebook_for", "notebook_parameters", "NOTEBOOKS", "NOTEBOOKS_DIR", "plan_study", "PROFILES_DIR",
    "RUN_FIELDS", "run_study", "should_skip", "StudyError", "StudyResult", "write_log",
]
