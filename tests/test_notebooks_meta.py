"""The notebooks' structure: numbering, badge, headings, tags and stripped outputs.

These checks read the JSON only (no kernel); CI executes the notebooks with
``pytest --nbval-lax notebooks/``. See notebooks/CONVENTIONS.md.
"""

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = (
    "01_lab_color_space.ipynb",
    "02_feature_extraction.ipynb",
    "03_model_and_training.ipynb",
    "04_evaluation.ipynb",
    "05_historical_photos.ipynb",
    "06_fake_or_real.ipynb",
    "07_old_films.ipynb",
    "08_vivid_colour.ipynb",
)
HEADINGS = ("Overview", "Setup", "Summary", "Exercises", "What's next")
BADGE = "https://colab.research.google.com/github/koalarization/koalarization/blob/main/notebooks/{}"
CHECK_TAG = "nbval-check-output"


def _strip_module():
    spec = importlib.util.spec_from_file_location("strip_outputs", NOTEBOOK_DIR / "strip_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _present():
    return sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))


NOTEBOOKS = _present()


def _load(name):
    return json.loads((NOTEBOOK_DIR / name).read_text(encoding="utf-8"))


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _tagged(nb, tag):
    return [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def test_notebooks_are_numbered_01_to_06():
    assert tuple(_present()) == EXPECTED


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_is_valid_nbformat_4_with_python_kernel(name):
    nb = _load(name)
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["kernelspec"]["language"] == "python"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_is_stripped_except_checked_cells(name):
    nb = _load(name)
    strip = _strip_module()
    assert strip.strip_notebook(nb) == nb, f"run: python notebooks/strip_outputs.py notebooks/{name}"
    for cell in _code_cells(nb):
        if CHECK_TAG in cell["metadata"].get("tags", []):
            assert cell["execution_count"], f"{name}: nbval skips a checked cell without an execution count"
        else:
            assert cell["execution_count"] is None
            assert cell["outputs"] == [], f"{name}: an untagged cell keeps outputs:\n{_source(cell)[:200]}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_checked_cells_have_plain_text_outputs(name):
    nb = _load(name)
    checked = _tagged(nb, CHECK_TAG)
    assert checked, f"{name}: no cell tagged {CHECK_TAG}"
    for cell in checked:
        assert cell["cell_type"] == "code"
        outputs = cell["outputs"]
        assert outputs, f"{name}: tagged cell without its stored output:\n{_source(cell)[:200]}"
        for out in outputs:
            assert out["output_type"] in ("stream", "execute_result"), f"{name}: {out['output_type']} stored"
            if out["output_type"] == "stream":
                assert out["name"] == "stdout", f"{name}: stderr stored in a checked cell"
            else:
                assert set(out["data"]) == {"text/plain"}, f"{name}: rich output stored: {sorted(out['data'])}"
            text = json.dumps(out)
            assert not re.search(r"0x[0-9a-f]{6,}", text), f"{name}: a memory address in a checked output"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_has_colab_badge_first(name):
    first = _source(_load(name)["cells"][0])
    assert BADGE.format(name) in first
    assert "colab-badge.svg" in first


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_has_the_template_headings_in_order(name):
    headings = []
    for cell in _load(name)["cells"]:
        if cell["cell_type"] == "markdown":
            headings += [m.strip() for m in re.findall(r"^##\s+(.+)$", _source(cell), flags=re.M)]
    positions = []
    for heading in HEADINGS:
        found = [i for i, h in enumerate(headings) if h.replace("\u2019", "'") == heading]
        assert found, f"{name}: no '## {heading}' heading (found: {headings})"
        positions.append(found[0])
    assert positions == sorted(positions), f"{name}: headings out of order: {headings}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_setup_detects_colab_and_installs_only_there(name):
    code = "\n".join(_source(c) for c in _code_cells(_load(name)))
    assert 'IS_COLAB = "google.colab" in sys.modules' in code
    match = re.search(r"^if IS_COLAB:.*\n(\s+)%pip install -q \"koalarization\[tf\] @ git\+https://github\.com/"
                      r"koalarization/koalarization\"", code, flags=re.M)
    assert match, f"{name}: the %pip install must sit inside `if IS_COLAB:`"
    assert "TF_CPP_MIN_LOG_LEVEL" in code


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_has_one_parameters_cell_with_quick_mode(name):
    cells = _tagged(_load(name), "parameters")
    assert len(cells) == 1, f"{name}: {len(cells)} cells tagged parameters"
    assert cells[0]["cell_type"] == "code"
    assert 'os.environ.get("KOALA_QUICK") == "1"' in _source(cells[0])


def _calls_in_order(src):
    """Names of the functions a cell calls at its top level (not inside its own defs), in source order."""
    src = re.sub(r"^(\s*)[%!].*$", r"\1pass", src, flags=re.M)  # IPython magics and shell commands
    calls = []
    for stmt in ast.parse(src).body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                calls.append((node.lineno, node.col_offset, name or ""))
    return [name for _, _, name in sorted(calls)]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_seeds_before_every_model(name):
    """A keras.utils.set_random_seed call comes before any top-level build_model() or train() call."""
    seeded = False
    for cell in _code_cells(_load(name)):
        for call in _calls_in_order(_source(cell)):
            if call == "set_random_seed":
                seeded = True
            elif call in ("build_model", "train"):
                assert seeded, f"{name}: {call}() runs before any keras.utils.set_random_seed:\n{_source(cell)[:300]}"


def test_strip_script_keeps_only_checked_outputs():
    strip = _strip_module()
    out = {"output_type": "stream", "name": "stdout", "text": ["1\n"]}
    nb = {
        "metadata": {"widgets": {"state": {}}},
        "cells": [
            {"cell_type": "code", "execution_count": 3, "metadata": {"tags": [CHECK_TAG]}, "outputs": [out],
             "source": ""},
            {"cell_type": "code", "execution_count": 4, "metadata": {"execution": {}}, "outputs": [out],
             "source": ""},
            {"cell_type": "markdown", "metadata": {}, "source": "# t"},
        ],
    }
    stripped = strip.strip_notebook(nb)
    assert stripped["cells"][0]["outputs"] == [out] and stripped["cells"][0]["execution_count"] == 1
    assert stripped["cells"][1]["execution_count"] is None
    assert stripped["cells"][1]["outputs"] == [] and stripped["cells"][1]["metadata"] == {}
    assert "widgets" not in stripped["metadata"]
    assert nb["cells"][1]["outputs"] == [out], "the input must not be modified"


def test_seed_check_reads_top_level_calls_in_order():
    assert _calls_in_order("m = build_model()\nkeras.utils.set_random_seed(1)") == ["build_model", "set_random_seed"]
    assert _calls_in_order("def f():\n    train(1)\n%pip install x\nf()") == ["f"]
