"""The notebooks in a real JupyterLab, clicked through in a real (headless) Chromium.

Run with ``make e2e`` (not part of ``make test``); see the conftest for the
server and the browser. Each scenario leaves screenshots in ``outputs/e2e/``.
"""

import csv
import json
import re
import time

import numpy as np
import pytest
from lab_server import SCREENSHOTS, open_page
from notebook_page import NotebookPage, png_array
from playwright.sync_api import expect

NB01 = "01_lab_color_space.ipynb"
NB05 = "05_historical_photos.ipynb"
NB06 = "06_fake_or_real.ipynb"
QUIZ_SIZE = 10  # photos in the quiz: five colorized, five real (injected into notebook 06's copy)
FIRST_ANSWERS = [True, False, False, True, True, False, True, False, False, True]  # True: the "Real" button
SECOND_ANSWERS = [not answer for answer in FIRST_ANSWERS]


def test_01_run_all_renders_figures_without_errors(page, lab):
    notebook = NotebookPage(page, lab, NB01).open()
    notebook.run_all()
    notebook.assert_ran_without_error()

    source = json.loads(notebook.path.read_text())
    expected_figures = sum("plt.show()" in "".join(cell["source"]) for cell in source["cells"]
                           if cell["cell_type"] == "code")
    images = notebook.images()
    assert expected_figures >= 4
    assert len(images) == expected_figures, f"{len(images)} images on the page, {expected_figures} figures drawn"
    assert all(image["complete"] and image["width"] > 200 and image["height"] > 100 for image in images), images

    saved = notebook.save()
    outputs = [output for cell in saved["cells"] for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output["output_type"] == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == expected_figures

    page.locator(".jp-Notebook .jp-OutputArea-output img").last.scroll_into_view_if_needed()
    notebook.screenshot(SCREENSHOTS / "01_run_all.png")


def _wipe_fraction(slider):
    return int(slider.locator(".widget-readout").inner_text().strip().rstrip("%")) / 100


def test_05_before_after_slider_moves_the_cut(page, lab):
    notebook = NotebookPage(page, lab, NB05).open()
    notebook.run_all()
    notebook.assert_ran_without_error()

    text_repr = page.locator(".jp-Notebook .jp-OutputArea-output", has_text=re.compile(r"^\s*VBox\("))
    assert text_repr.count() == 0, "the widget shows as a text repr: is jupyterlab_widgets installed in the venv?"
    slider = page.locator(".jp-Notebook .widget-hslider")
    expect(slider).to_have_count(1)
    expect(slider).to_be_visible()
    widget = page.locator(".jp-Notebook .jp-OutputArea-output").filter(has=page.locator(".widget-hslider"))
    view = widget.locator(".widget-image")
    expect(view).to_be_visible()
    assert _wipe_fraction(slider) == 0.5
    notebook.screenshot(SCREENSHOTS / "05_slider_at_50.png", widget)
    before = png_array(view.screenshot())

    handle, track = slider.locator(".noUi-handle"), slider.locator(".noUi-target")
    start, bar = handle.bounding_box(), track.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(bar["x"] + 0.1 * bar["width"], start["y"] + start["height"] / 2, steps=10)
    page.mouse.up()
    expect(slider.locator(".widget-readout")).not_to_have_text("50%")
    fraction = _wipe_fraction(slider)
    assert 0.02 <= fraction <= 0.25, f"the slider reads {fraction:.0%} after dragging it to 10 % of its length"

    after, deadline = before, time.monotonic() + 30
    while time.monotonic() < deadline:  # the kernel sends the new image: wait until it is on the page
        page.wait_for_timeout(250)
        after = png_array(view.screenshot())
        if after.shape == before.shape and not np.array_equal(after, before):
            break
    notebook.screenshot(SCREENSHOTS / f"05_slider_at_{round(100 * fraction)}.png", widget)
    moved = after.shape == before.shape and not np.array_equal(after, before)
    assert moved, "moving the slider changed nothing in the widget's image"

    # colour left of the cut, gray (R = G = B) right of it: the colour now ends where the slider says
    assert abs(_colour_extent(before) - 0.5) < 0.03, f"colour up to {_colour_extent(before):.0%} at 50 %"
    assert abs(_colour_extent(after) - fraction) < 0.03, f"colour up to {_colour_extent(after):.0%} at {fraction:.0%}"


def _colour_extent(rgb):
    """Fraction of the width, from the left, up to the last column that holds colour (not R = G = B)."""
    spread = (rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)).mean(axis=0)  # per column; 0 where gray
    coloured = np.flatnonzero(spread > 0.5)
    assert coloured.size, "no colour anywhere in the widget's image"
    return (coloured[-1] + 1) / len(spread)


@pytest.fixture(scope="module")
def quiz(browser, lab):
    """Notebook 06 open in one page for the two quiz scenarios, with ten photos (papermill-style injected cell)."""
    path = lab.workdir / "notebooks" / NB06
    notebook = json.loads(path.read_text())
    where = next(k for k, cell in enumerate(notebook["cells"]) if "parameters" in cell["metadata"].get("tags", []))
    notebook["cells"].insert(where + 1, {
        "cell_type": "code", "execution_count": None, "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
        "source": f"# Parameters injected by tests/e2e\nNUM_FAKE = {QUIZ_SIZE // 2}\nNUM_REAL = {QUIZ_SIZE // 2}\n",
    })
    path.write_text(json.dumps(notebook))
    with open_page(browser, lab) as page:
        yield NotebookPage(page, lab, NB06).open()


def _take_quiz(notebook, answers, shot_name):
    """Click Real / Fake for each answer; check the page after every click. Returns the result text."""
    page = notebook.page
    box = page.locator(".jp-Notebook .jp-OutputArea-output").filter(has=page.get_by_role("button", name="Real"))
    expect(box).to_have_count(1)
    photo, progress = box.locator(".widget-image"), box.locator("div.widget-label")
    buttons = {True: box.get_by_role("button", name="Real", exact=True),
               False: box.get_by_role("button", name="Fake", exact=True)}
    expect(photo).to_be_visible()
    assert page.evaluate("img => img.complete && img.naturalWidth", photo.element_handle()) > 100
    expect(buttons[True]).to_be_enabled()
    expect(buttons[False]).to_be_enabled()
    expect(progress).to_have_text(re.compile(rf"^Image 1 of {len(answers)}\b"))
    notebook.screenshot(SCREENSHOTS / f"{shot_name}_start.png", box)
    for k, judged_real in enumerate(answers, start=1):
        shown = photo.get_attribute("src")
        buttons[judged_real].click()
        if k < len(answers):
            expect(progress).to_have_text(re.compile(rf"^Image {k + 1} of {len(answers)}\b"))
            expect(photo).not_to_have_attribute("src", shown)  # the next photo is shown
    expect(progress).to_have_text(f"Done: {len(answers)} of {len(answers)} answered.")
    expect(buttons[True]).to_be_disabled()
    result = box.locator("div.widget-html")
    expect(result).to_contain_text("Answers saved to")
    notebook.screenshot(SCREENSHOTS / f"{shot_name}_done.png", box)
    return result.inner_text()


def _check_answers_file(path, answers, result_text):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["judged_real"] for row in rows] == [str(int(answer)) for answer in answers], rows
    assert sum(row["is_fake"] == "1" for row in rows) == QUIZ_SIZE // 2
    assert len({row["name"] for row in rows}) == QUIZ_SIZE
    fooled = sum(row["is_fake"] == "1" and row["judged_real"] == "1" for row in rows)
    assert f"Colorized images judged real: {fooled} of {QUIZ_SIZE // 2} " in result_text, result_text
    assert f"Answers saved to {path.relative_to(path.parents[1])}" in result_text, result_text


def test_06_quiz_clicks_update_the_score_and_the_answers_file(quiz):
    quiz.run_all()
    quiz.assert_ran_without_error()
    answers_file = quiz.path.parent / "outputs" / "quiz_answers.csv"
    expect(quiz.output_containing("your answers will be saved to")).to_contain_text("outputs/quiz_answers.csv")
    assert not answers_file.exists()

    result = _take_quiz(quiz, FIRST_ANSWERS, "06_quiz")
    _check_answers_file(answers_file, FIRST_ANSWERS, result)


def test_06_restart_and_run_all_keeps_the_earlier_answers(quiz):
    first = quiz.path.parent / "outputs" / "quiz_answers.csv"
    assert first.exists(), "the quiz scenario did not leave its answers file"
    kept = first.read_bytes()

    quiz.run_all(restart=True)
    quiz.assert_ran_without_error()
    second = quiz.path.parent / "outputs" / "quiz_answers_2.csv"
    expect(quiz.output_containing("your answers will be saved to")).to_contain_text("outputs/quiz_answers_2.csv")
    expect(quiz.output_containing("participant(s)")).to_contain_text(f"1 participant(s), {QUIZ_SIZE} answers")
    assert first.read_bytes() == kept

    result = _take_quiz(quiz, SECOND_ANSWERS, "06_after_restart")
    assert first.read_bytes() == kept, "the second participant's answers overwrote the first's"
    _check_answers_file(second, SECOND_ANSWERS, result)
