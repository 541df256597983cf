"""Driving one notebook in JupyterLab through the page, as a reader does: menus, buttons, sliders.

Only the JupyterLab DOM is used (menu items by their labels, cells by their
CSS classes); the server's REST API is used only to wait for the kernel and to
read what the notebook wrote to disk.
"""

import io
import json
import re
import time

import numpy as np
from PIL import Image

PROMPTS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                    .map(e => e.textContent.trim())"""
IMAGES = """() => [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img')]
                   .map(img => ({complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}))"""
STDERR = ".jp-Notebook .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
COMPUTED = re.compile(r"^\[\d+\]:$")


def png_array(png):
    """RGB uint8 array (H, W, 3) of PNG bytes (a screenshot)."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


class NotebookPage:
    """One notebook of the test server's ``notebooks/`` folder, open in a browser page."""

    def __init__(self, page, lab, name):
        self.page, self.lab, self.name = page, lab, name
        self.path = lab.workdir / "notebooks" / name

    def open(self, timeout=180):
        """Open the notebook and wait until its kernel is idle."""
        # a workspace of its own: JupyterLab does not reopen (and start kernels for) the previous tests' notebooks
        self.page.goto(self.lab.url(f"lab/workspaces/{self.name.split('_')[0]}/tree/notebooks/{self.name}"))
        self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell").first.wait_for(timeout=timeout * 1000)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [s["kernel"]["execution_state"] for s in self.lab.api("sessions")
                      if s["path"].endswith(self.name) and s.get("kernel")]
            if states and states[0] == "idle":
                return self
            time.sleep(0.3)
        raise AssertionError(f"{self.name}: no idle kernel after {timeout} s (sessions: {self.lab.api('sessions')})")

    def menu(self, menu, item):
        """Click ``menu`` in the menu bar, then its item labelled ``item`` (a string or a regular expression)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
        label = item if isinstance(item, re.Pattern) else re.compile(f"^{re.escape(item)}$")
        self.page.locator(".lm-Menu-item:not(.lm-mod-hidden)").filter(
            has=self.page.locator(".lm-Menu-itemLabel", has_text=label)).click()

    def prompts(self):
        """The code cells' input prompts, e.g. ``['[1]:', '[*]:', '[ ]:']``."""
        return self.page.evaluate(PROMPTS)

    def run_all(self, restart=False, timeout=480):
        """Run > Run All Cells (or Kernel > Restart Kernel and Run All Cells), and wait until no cell is queued.

        Returns the prompts once done; an error stops the run, leaving ``[ ]:`` prompts after it.
        """
        if restart:
            self.menu("Kernel", "Restart Kernel and Run All Cells…")
            self.page.locator(".jp-Dialog .jp-mod-accept").click()
        else:
            self.menu("Run", "Run All Cells")
        busy = f"() => ({PROMPTS})().includes('[*]:')"
        self.page.wait_for_function(busy, timeout=120_000)
        self.page.wait_for_function(f"() => !({busy})()", timeout=timeout * 1000, polling=500)
        return self.prompts()

    def assert_ran_without_error(self):
        """Every code cell has an execution count and no output on the page is a traceback."""
        prompts = self.prompts()
        not_run = [k for k, prompt in enumerate(prompts) if not COMPUTED.match(prompt)]
        tracebacks = [text for text in self.page.locator(STDERR).all_inner_texts()
                      if "Traceback" in text or "Error" in text]
        assert not tracebacks, f"{self.name}: error output on the page:\n" + "\n---\n".join(tracebacks)
        assert not not_run, f"{self.name}: code cells {not_run} did not run (prompts {prompts})"

    def images(self):
        """``complete``, ``width``, ``height`` of every image in the outputs (figures and widgets)."""
        return self.page.evaluate(IMAGES)

    def save(self):
        """File > Save Notebook; returns the notebook as saved on disk (a dict)."""
        self.menu("File", re.compile("^Save( Notebook)?$"))
        self.page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')")
        return json.loads(self.path.read_text())

    def output_containing(self, text):
        """The output area (one cell's outputs) whose text contains ``text``."""
        return self.page.locator(".jp-Notebook .jp-Cell-outputArea", has_text=text)

    def screenshot(self, path, locator=None):
        """Save a screenshot of the page, or of ``locator`` scrolled into view; returns the PNG bytes."""
        if locator is not None:
            locator.scroll_into_view_if_needed()
            return locator.screenshot(path=path)
        return self.page.screenshot(path=path)
