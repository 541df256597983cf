"""Fixtures of the browser tests: a real JupyterLab server and a real headless Chromium.

The server runs from the project's venv (the interpreter running pytest) on
127.0.0.1, on a free port, with a random token, in a temporary copy of the
notebooks and of ``data/`` (the notebooks find the repository root as ``..``),
with ``KOALA_QUICK=1`` and ``KOALA_DATA`` pointing at the offline photos. Its
own JupyterLab settings (all cells attached to the page, no news pop-up) live
in the same temporary folder, so a developer's Jupyter settings are neither
used nor changed. The server and every kernel it started are stopped at the
end, also when a test fails.

The browser is the system Chromium (Debian's ``chromium`` package), driven by
Playwright through ``executable_path``; ``E2E_HEADED=1`` shows the window and
``E2E_SLOWMO=<ms>`` slows every action down, to watch a run. ``make e2e``
installs both (``tests/e2e/install.sh``). Screenshots go to ``outputs/e2e/``.
"""

import os
import shutil

import pytest
from lab_server import ROOT, SCREENSHOTS, LabServer, find_chromium, open_page


@pytest.fixture(scope="session")
def lab(tmp_path_factory, shared_data):
    """A JupyterLab server on a temporary copy of notebooks/ and data/; stopped at the end, even on failure."""
    workdir = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", workdir / "notebooks", ignore=shutil.ignore_patterns("outputs", ".*"))
    shutil.copytree(ROOT / "data", workdir / "data")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SCREENSHOTS.glob("*.png"):  # only this run's pictures
        stale.unlink()
    server = LabServer(workdir, shared_data, SCREENSHOTS / "jupyterlab.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a click's answer comes from the kernel: allow for a busy CPU

    headed = os.environ.get("E2E_HEADED") == "1"
    if headed and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.fail("E2E_HEADED=1 needs a display (DISPLAY or WAYLAND_DISPLAY is not set)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=find_chromium(), headless=not headed,
                                              slow_mo=float(os.environ.get("E2E_SLOWMO", 0)))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed test, a screenshot of each page it used: ``outputs/e2e/FAILED_<test>.png``."""
    report = yield
    if report.when == "call" and report.failed:
        pages = [getattr(value, "page", value) for value in getattr(item, "funcargs", {}).values()]
        for k, shown in enumerate(p for p in pages if hasattr(p, "screenshot") and hasattr(p, "goto")):
            try:
                shown.screenshot(path=SCREENSHOTS / f"FAILED_{item.name}{'_' + str(k) if k else ''}.png")
            except Exception as exc:  # the browser may be gone: the report matters more than the picture
                report.sections.append(("e2e", f"no failure screenshot: {exc}"))
    return report


@pytest.fixture
def page(browser, lab):
    with open_page(browser, lab) as shown:
        yield shown
