"""The Jupyter side of the study: the kernel the notebooks run on (installed when absent) and the
parameters a notebook declares (papermill's inspection).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..jobs import KERNEL_NAME, StudyError


def ensure_kernel(kernel_name: str = KERNEL_NAME) -> str:
    """Make sure the Jupyter kernel ``kernel_name`` exists; install the venv's ``python3`` if absent."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        ksm.get_kernel_spec(kernel_name)
        return kernel_name
    except NoSuchKernel:
        if kernel_name != KERNEL_NAME:
            raise StudyError(f"Jupyter kernel {kernel_name!r} is not installed; available: {sorted(ksm.find_kernel_specs())}.")
    cmd = [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise StudyError(f"Could not install the python3 kernel ({' '.join(cmd)}): {done.stderr.strip()}")
    return kernel_name


def notebook_parameters(notebook: Path) -> list[str]:
    """Names of the parameters a notebook declares in its ``parameters`` cell."""
    import papermill

    return list(papermill.inspect_notebook(str(notebook)))
