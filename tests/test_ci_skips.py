"""The CI hook (tests/ci_skips.py): with ``$CI`` set, every kind of skip fails the run and names its
reason; deselected tests and expected failures do not; without ``$CI`` (or with ``0``/``false``)
skips stay skips."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = '''
import pytest

@pytest.fixture
def data():
    pytest.skip("no data here")

def test_passes():
    pass

def test_skips_inside():
    pytest.skip("skipped inside the test")

@pytest.mark.skipif(True, reason="a skipif mark")
def test_marked():
    pass

def test_fixture_skips(data):
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False

@pytest.mark.slow
def test_deselected():
    pytest.skip("never runs: deselected")
'''
MODULE_SKIP = '''
import pytest
pytest.importorskip("no_such_module_for_lowres_clip")

def test_never_collected():
    pass
'''


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_suite=TESTS, test_module_skip=MODULE_SKIP)
    pytester.makeini("[pytest]\nmarkers =\n    slow: a marker to deselect\n")
    return pytester


def run(suite, *files: str):
    return suite.runpytest_inprocess("-p", "ci_skips", "-m", "not slow", "-rA",
                                     "-W", "ignore::pytest.PytestAssertRewriteWarning", *files)


@pytest.mark.parametrize("value", ["1", "true", "yes", "github"])
def test_every_skip_fails_under_ci(suite, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    result = run(suite, "test_suite.py")
    assert result.ret != 0
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0
    assert outcomes["passed"] == 1 and outcomes["xfailed"] == 1 and outcomes["deselected"] == 1
    assert outcomes["failed"] == 1  # the skip inside the test (call phase)
    assert outcomes["errors"] == 2  # the skipif mark and the fixture's skip (setup phase)
    out = result.stdout.str()
    for reason in ("skipped inside the test", "a skipif mark", "no data here"):
        assert reason in out, reason
    assert "makes a skip a failure" in out and "never runs: deselected" not in out
    module = run(suite, "test_module_skip.py")  # skipped while collected: a collection error
    assert module.ret != 0 and module.parseoutcomes().get("skipped", 0) == 0
    assert "no_such_module_for_lowres_clip" in module.stdout.str()


@pytest.mark.parametrize("value", [None, "", "0", "false", "False"])
def test_skips_stay_skips_without_ci(suite, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    result = run(suite)
    assert result.ret == 0
    result.assert_outcomes(passed=1, skipped=4, xfailed=1, deselected=1)  # 3 in the tests, 1 module
