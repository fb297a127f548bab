"""JupyterLab + headless Chromium (Playwright) machinery for the end-to-end browser test.

A widget that renders nothing still passes a headless papermill run, so ``tests/test_browser.py``
opens a notebook in a real JupyterLab served from the project's environment, runs it from the
browser and drives its ipywidgets like a researcher would. This module holds the parts that are not
specific to one notebook:

* :func:`jupyter_lab` starts ``<venv>/bin/jupyter lab`` on a free localhost port with a known token,
  isolated config/data/settings/workspace folders, and always stops it (and its kernels).
* :func:`chromium_page` opens Debian's system Chromium (``/usr/bin/chromium``) through Playwright
  with a fresh profile; Playwright's own browser downloads are never used.
* :func:`open_notebook`, :func:`run_all_cells` and :func:`wait_for_run` drive JupyterLab's UI with
  bounded waits and fail with the notebook's own error text when a cell raises.
* :func:`widget_control` finds an ipywidgets control by its description label.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # playwright is imported lazily so that collecting the tests never needs it
    from playwright.sync_api import Locator, Page

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (``make browser-deps`` installs it); Playwright drives it via ``executable_path``."""

CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
"""Launch flags: headless, no sandbox (tests may run as root), nothing that reaches the network."""

TOKEN = "lowres-clip-browser-test"
"""The JupyterLab token the test server uses (the server listens on 127.0.0.1 only)."""

#: JupyterLab user settings written for the test server: no news pop-up over the screenshots, and
#: every cell kept rendered (no windowing), so off-screen cells still show their prompts and outputs.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class BrowserTestError(ValueError):
    """The JupyterLab server or the notebook in the browser did not reach the expected state."""


def venv_jupyter() -> Path:
    """The ``jupyter`` executable of the environment running the tests (the project's ``.venv``).

    Raises:
        BrowserTestError: when the environment has no ``jupyter`` (run ``make setup``).
    """
    exe = Path(sys.prefix) / "bin" / "jupyter"
    if not exe.is_file():
        raise BrowserTestError(f"{exe} is missing: run `make setup` to install JupyterLab in {sys.prefix}")
    return exe


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolated_jupyter_env(home: Path) -> dict[str, str]:
    """Environment for the server: Jupyter's user folders under ``home`` so nothing of the user's leaks in.

    Kernel specs are then found only in the environment (``<venv>/share/jupyter/kernels``, where
    ``make setup`` installs ``python3``), and JupyterLab settings/workspaces start empty.
    """
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env.pop("JUPYTER_PATH", None)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"})
    return env


def kernel_python(env: dict[str, str], kernel: str = "python3") -> str:
    """The Python executable the server will start for ``kernel`` (``python`` in argv means the server's own).

    Raises:
        BrowserTestError: when the kernel spec is missing.
    """
    out = subprocess.run([str(venv_jupyter()), "kernelspec", "list", "--json"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    specs = json.loads(out.stdout)["kernelspecs"]
    if kernel not in specs:
        raise BrowserTestError(f"kernel {kernel!r} not found (have {sorted(specs)}); run `make setup`")
    argv0 = specs[kernel]["spec"]["argv"][0]
    # jupyter_client replaces a bare ``python``/``python3``/``python3.X`` by the server's sys.executable
    major, minor = sys.version_info[:2]
    if argv0 in {"python", f"python{major}", f"python{major}.{minor}"}:
        return str(Path(venv_jupyter()).with_name("python"))
    return argv0


@dataclass
class JupyterLab:
    """A running JupyterLab server.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/``.
        token: the server's token.
        root_dir: the folder the server serves.
        process: the ``jupyter lab`` process.
        log_path: file receiving the server's stdout and stderr.
        env: the server's environment (isolated Jupyter folders).
    """

    base_url: str
    token: str
    root_dir: Path
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (e.g. ``lab/tree/x.ipynb``) with the token."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        """The last ``chars`` characters of the server log (for error messages)."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> dict | list:
        """Call the server's REST API (``api/...``) and decode its JSON answer."""
        req = urllib.request.Request(self.url(path), method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else {}


def _write_lab_settings(settings_dir: Path) -> None:
    for rel, value in LAB_SETTINGS.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@contextmanager
def jupyter_lab(root_dir: Path, work_dir: Path, startup_timeout: float = 120.0) -> Iterator[JupyterLab]:
    """Start ``jupyter lab`` serving ``root_dir`` on a free localhost port; stop it (and its kernels) on exit.

    Args:
        root_dir: folder served (``--ServerApp.root_dir``).
        work_dir: scratch folder for the server's isolated Jupyter folders, settings and log.
        startup_timeout: seconds to wait for ``/api/status`` to answer.

    Raises:
        BrowserTestError: when the server exits early or does not answer within ``startup_timeout``
            (the message ends with the server log).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    env = isolated_jupyter_env(work_dir / "home")
    settings_dir, workspaces_dir = work_dir / "lab-settings", work_dir / "lab-workspaces"
    _write_lab_settings(settings_dir)
    workspaces_dir.mkdir(exist_ok=True)
    port = free_port()
    cmd = [
        str(venv_jupyter()), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root_dir}", f"--LabApp.user_settings_dir={settings_dir}",
        f"--LabApp.workspaces_dir={workspaces_dir}", "--LabApp.news_url=None",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = work_dir / "jupyter-lab.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    lab = JupyterLab(f"http://127.0.0.1:{port}/", TOKEN, Path(root_dir), proc, log_path, env)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise BrowserTestError(f"jupyter lab exited with code {proc.returncode}:\n{lab.log_tail()}")
            try:
                lab.api("api/status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise BrowserTestError(
                        f"jupyter lab did not answer on port {port} within {startup_timeout:.0f}s:\n{lab.log_tail()}"
                    ) from None
                time.sleep(0.5)
        yield lab
    finally:
        stop_jupyter_lab(lab)


def stop_jupyter_lab(lab: JupyterLab, timeout: float = 20.0) -> None:
    """Stop the server: REST shutdown (which ends its kernels), then SIGTERM, then SIGKILL of its group."""
    proc = lab.process
    if proc.poll() is None:
        try:
            lab.api("api/shutdown", method="POST", timeout=5)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    # kernels are in the server's own session (start_new_session): end any left behind
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def chromium_missing_reason() -> str | None:
    """Why the browser test cannot run here (``None`` when Chromium and Playwright are available)."""
    if shutil.which(str(CHROMIUM)) is None:
        return f"{CHROMIUM} is missing (install it with `make browser-deps`)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (run `make setup`)"
    return None


@contextmanager
def chromium_page(user_data_dir: Path, width: int = 1400, height: int = 1000,
                  default_timeout_ms: int = 60_000) -> Iterator["Page"]:
    """A page of headless system Chromium with a fresh profile in ``user_data_dir``; closed on exit."""
    from playwright.sync_api import sync_playwright

    user_data_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(user_data_dir), executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": width, "height": height}, timeout=default_timeout_ms,
        )
        try:
            context.set_default_timeout(default_timeout_ms)
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()


def open_notebook(page: "Page", lab: JupyterLab, rel_path: str, timeout_ms: int = 90_000) -> str:
    """Open ``rel_path`` (relative to the server root) in JupyterLab and wait until its kernel is idle.

    Returns:
        The name of the kernel JupyterLab started for it (``python3``).
    """
    page.goto(lab.url(f"lab/tree/{rel_path}"), timeout=timeout_ms)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=timeout_ms)
    return wait_kernel_idle(page, timeout_ms)


def wait_kernel_idle(page: "Page", timeout_ms: int = 90_000) -> str:
    """Wait until the active notebook's kernel is connected and idle; returns the kernel's name."""
    handle = page.wait_for_function(
        """() => {
            const panel = window.jupyterapp?.shell.currentWidget;
            const ctx = panel?.sessionContext;
            const kernel = ctx?.session?.kernel;
            return ctx?.isReady && kernel?.status === 'idle' && kernel.connectionStatus === 'connected'
                && kernel.name;
        }""",
        timeout=timeout_ms,
    )
    return str(handle.json_value())


def run_all_cells(page: "Page") -> None:
    """Menu ``Run > Run All Cells`` of the active notebook."""
    page.locator("#jp-menu-panel .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


# Reads the active notebook's cell models through ``window.jupyterapp`` (the server runs with
# ``--LabApp.expose_app_in_browser``): execution counts and error outputs, independent of rendering.
_RUN_STATE_JS = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const model = panel.content.model;
    const cells = [];
    for (let i = 0; i < model.cells.length; i++) {
        const cell = model.cells.get(i);
        if (cell.type !== 'code' || !cell.sharedModel.getSource().trim()) continue;
        const errors = [];
        for (let j = 0; j < cell.outputs.length; j++) {
            const out = cell.outputs.get(j).toJSON();
            if (out.output_type === 'error') errors.push(`${out.ename}: ${out.evalue}`);
        }
        cells.push({count: cell.executionCount, running: cell.executionState === 'running', errors});
    }
    return {cells, status: panel.sessionContext.session?.kernel?.status ?? null};
}"""


def wait_for_run(page: "Page", timeout_s: float = 300.0, poll_s: float = 0.5) -> list[int]:
    """Wait until every non-empty code cell of the active notebook has run and its kernel is idle.

    Returns:
        The cells' execution counts.

    Raises:
        BrowserTestError: as soon as a cell has an error output (naming the cell and the error), or
            after ``timeout_s`` (with the execution counts and kernel status seen last).
    """
    deadline = time.monotonic() + timeout_s
    state: dict = {}
    while time.monotonic() < deadline:
        state = page.evaluate(_RUN_STATE_JS)
        for i, cell in enumerate(state["cells"]):
            if cell["errors"]:
                raise BrowserTestError(f"code cell {i + 1} raised in JupyterLab: " + "; ".join(cell["errors"])[:2000])
        counts = [c["count"] for c in state["cells"]]
        running = any(c["running"] for c in state["cells"])
        if counts and None not in counts and not running and state["status"] == "idle":
            return counts
        time.sleep(poll_s)
    counts = [c["count"] for c in state.get("cells", [])]
    raise BrowserTestError(f"the notebook did not finish within {timeout_s:.0f}s: execution counts {counts}, "
                           f"kernel {state.get('status')}")


def widget_control(container: "Locator", description: str) -> "Locator":
    """The ipywidgets control inside ``container`` whose description label is exactly ``description``.

    ipywidgets renders a described control (Dropdown, ToggleButtons, sliders...) as a ``div`` whose
    first child is ``<label class="widget-label">description</label>``; that ``div`` is returned.
    (A ``Button``'s description is its text: find it with ``get_by_role("button", name=...)``.)
    """
    label = container.locator("label.widget-label", has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))
    return label.locator("xpath=..")
