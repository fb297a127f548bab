"""A skip in CI is a failure: a pytest plugin (loaded by ``conftest.py``).

When the environment variable ``CI`` is set to anything but ``""``, ``0`` or ``false`` (any case),
every skipped test fails with its skip reason: a ``pytest.skip`` in a test or fixture, a
``skipif`` / ``skip`` mark (reported in the setup phase), and a module skipped while it is collected
(``pytest.importorskip`` at module level, ``pytest.skip(allow_module_level=True)``), which becomes a
collection error. Expected failures (``xfail``) are not skips, and tests deselected with ``-m`` or
``-k`` never run, so neither is affected. Without ``CI`` nothing changes.
"""

from __future__ import annotations

import os

import pytest

FALSE_VALUES = ("", "0", "false")


def ci_enabled() -> bool:
    """Whether ``$CI`` asks for skips to fail."""
    return os.environ.get("CI", "").strip().lower() not in FALSE_VALUES


def skip_reason(report) -> str:
    """The reason a skipped report gives (``Skipped: `` prefix removed)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _as_failure(report, what: str) -> None:
    reason = skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (f"{what} was skipped, and CI={os.environ.get('CI', '')!r} makes a skip a failure "
                       f"(tests/ci_skips.py). Skip reason: {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and ci_enabled():
        _as_failure(report, item.nodeid)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.skipped and ci_enabled():
        _as_failure(report, f"collecting {collector.nodeid or collector.name}")
    return report
