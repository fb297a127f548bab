"""The study's notebook kernels stay quiet: no unencrypted-TCP warning per notebook, no kernel
traceback after a terminal's Ctrl-C (only the study's one-line summary)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from lowres_clip import interrupt
from lowres_clip.jobs import Job, execute
from lowres_clip.smoke import make_smoke_dataset

LIB = Path(__file__).resolve().parents[1] / "lib"


def test_a_notebook_runs_without_the_kernels_tcp_warning(tmp_path, capfd):
    """ipykernel warns on its stderr (the study's) for every kernel on TCP; over IPC it does not."""
    ipc_dirs = lambda: {*Path(tempfile.gettempdir()).glob("lrc-*"), *Path("/tmp").glob("lrc-*")}  # noqa: E731
    before = ipc_dirs()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from ipykernel.kernelapp import IPKernelApp\nprint('hello from the kernel over', IPKernelApp.instance().transport)")]
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    job = Job("tiny", "tiny.ipynb", {}, tmp_path / "out" / "tiny.ipynb")
    execute(job, "python3", tmp_path)
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out, captured.err
    executed = nbformat.read(job.output, 4)
    assert executed.cells[0].outputs[0]["text"].strip() == "hello from the kernel over ipc"
    assert ipc_dirs() <= before  # the IPC sockets' folder is removed


def test_ctrl_c_in_a_terminal_prints_the_summary_and_no_kernel_traceback(tmp_path):
    """SIGINT to the study's whole process group (a terminal's Ctrl-C) while a notebook runs: the
    kernel is stopped without printing a zmq traceback; the study prints its one-line summary."""
    data = make_smoke_dataset(tmp_path / "data")
    roots = {name: tmp_path / name for name in ("runs", "figures", "cache")}
    cmd = [sys.executable, "-m", "lowres_clip.study", "--profile", "smoke", "--dataset", "eurosat",
           "--data-root", str(data), *[a for n, p in roots.items() for a in (f"--{n}-root", str(p))]]
    notebooks = roots["runs"] / "notebooks"
    proc, out, err = _ctrl_c_when(cmd, lambda: any(notebooks.rglob("*.ipynb")), 240, 180)
    text = out + err
    assert proc.returncode == interrupt.EXIT_CODE, text
    assert "Traceback" not in text and "[IPKernelApp]" not in text, text
    summary = [ln for ln in text.replace("\r", "\n").splitlines() if ln.startswith("interrupted")]
    assert len(summary) == 1 and summary[0].startswith("interrupted during eurosat/"), text
    assert "Rerun `python -m lowres_clip.study" in summary[0]


SLEEPER = """
import sys
from pathlib import Path
from lowres_clip import interrupt
from lowres_clip.jobs import Job, execute
folder = Path(sys.argv[1])
try:
    with interrupt.guard(["sleep"], [], [], []) as g:
        g.current = "sleep"
        try:
            execute(Job("sleep", "sleep.ipynb", {}, folder / "out" / "sleep.ipynb"), "python3", folder)
        except Exception as exc:
            interrupt.raise_if_interrupt(exc)
            raise
except interrupt.Interrupted as exc:
    print(exc.summary(), file=sys.stderr)
    sys.exit(interrupt.EXIT_CODE)
"""


def test_ctrl_c_while_a_cell_runs_leaves_the_kernel_silent(tmp_path):
    """The same with a notebook whose cell is surely busy when Ctrl-C comes (the study's own notebooks
    may be between cells): a kernel asked to shut down then prints a zmq traceback; killed, it does not."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import time\nfor _ in range(600):\n    time.sleep(0.1)")]
    nbformat.write(nb, tmp_path / "sleep.ipynb")
    proc, out, err = _ctrl_c_when([sys.executable, "-c", SLEEPER, str(tmp_path)],
                                  lambda: (tmp_path / "out" / "sleep.ipynb").exists(), 120, 120)
    assert proc.returncode == interrupt.EXIT_CODE, out + err
    assert "Traceback" not in out + err and "[IPKernelApp]" not in out + err, out + err
    assert err.strip() == ("interrupted during sleep: 0 ran, 0 already done; 1 not finished (first: sleep). "
                           "Rerun the same command to finish: finished runs are skipped."), err


def _ctrl_c_when(cmd: list[str], ready, start_timeout: float, end_timeout: float):
    """Start ``cmd`` in its own session, wait until ``ready()`` and 3 s more (a cell is busy), then
    send SIGINT to its whole process group as a terminal's Ctrl-C does; ``(proc, stdout, stderr)``."""
    path = os.pathsep.join([str(LIB), *filter(None, [os.environ.get("PYTHONPATH")])])
    # a terminal's foreground process takes Ctrl-C: the child must not inherit an ignored SIGINT from
    # this process (an earlier test or a background runner can leave it ignored; Python then keeps
    # ignoring it, and the signal never arrives)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": path},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + start_timeout
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=end_timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc, out, err


def test_a_ctrl_c_a_library_swallowed_still_ends_the_job_as_interrupted(tmp_path, monkeypatch):
    """After a Ctrl-C, a notebook that fails (its cell was stopped) or returns (the KeyboardInterrupt
    did not reach ``execute``) ends the job as interrupted, so the study stops and prints its summary
    instead of reporting a failed notebook or carrying on."""
    import papermill
    import pytest

    from lowres_clip import jobs

    job = jobs.Job("j", "nb.ipynb", {}, tmp_path / "out" / "nb.ipynb")
    outcomes = {"returns": lambda *a, **k: None, "fails": lambda *a, **k: (_ for _ in ()).throw(RuntimeError("cell"))}
    for name, run in outcomes.items():
        monkeypatch.setattr(papermill, "execute_notebook", run)
        monkeypatch.setattr(interrupt._PRESSED, "is_set", lambda: True)
        with pytest.raises(KeyboardInterrupt):
            jobs.execute(job, notebooks_dir=tmp_path)
        monkeypatch.setattr(interrupt._PRESSED, "is_set", lambda: False)  # no Ctrl-C: the job's own outcome
        if name == "returns":
            jobs.execute(job, notebooks_dir=tmp_path)
        else:
            with pytest.raises(RuntimeError, match="cell"):
                jobs.execute(job, notebooks_dir=tmp_path)
