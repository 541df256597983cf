"""Strip the notebooks' outputs, keeping only those of cells tagged for nbval.

CI runs ``pytest --nbval-lax notebooks/``: with ``--nbval-lax`` only the cells
tagged ``nbval-check-output`` have their outputs compared with the stored ones.
So those few small, deterministic cells keep their outputs in git, and every
other cell is committed without outputs or execution counts.

Usage, from the repository root::

    python notebooks/strip_outputs.py              # strip every notebooks/*.ipynb in place
    python notebooks/strip_outputs.py NB.ipynb ... # strip these files
    python notebooks/strip_outputs.py --check      # exit 1 if a notebook needs stripping

``tests/test_notebooks_meta.py`` checks that the committed notebooks are in the
state this script leaves them in (it imports :func:`strip_notebook`).
"""

import argparse
import copy
import json
import sys
from pathlib import Path

CHECK_TAG = "nbval-check-output"
NOTEBOOK_DIR = Path(__file__).resolve().parent
# Cell metadata that only records how a cell was last run or displayed.
VOLATILE_CELL_KEYS = ("execution", "collapsed", "scrolled", "ExecuteTime", "jp-MarkdownHeadingCollapsed")
# Notebook metadata written by front ends (widget state can be megabytes).
VOLATILE_NOTEBOOK_KEYS = ("widgets", "toc", "varInspector", "papermill")


def tags(cell):
    """The cell's tags (a list, possibly empty)."""
    return list(cell.get("metadata", {}).get("tags", []))


def is_checked(cell):
    """True when nbval compares this cell's outputs under ``--nbval-lax``."""
    return cell.get("cell_type") == "code" and CHECK_TAG in tags(cell)


def _strip_output(output, count):
    """A kept output, with a stable execution count and no metadata."""
    output = copy.deepcopy(output)
    if "execution_count" in output:
        output["execution_count"] = count
    if output.get("output_type") in ("execute_result", "display_data"):
        output["metadata"] = {}
    return output


def strip_notebook(nb):
    """Return a stripped copy of a notebook given as a JSON dict.

    Code cells lose their outputs and execution counts, except that cells
    tagged ``nbval-check-output`` keep their outputs and get the execution
    counts 1, 2, 3... in notebook order (nbval refuses stored outputs of a
    cell whose count is empty: it takes that cell for never run). Volatile
    cell and notebook metadata (timings, widget state) is dropped everywhere.
    """
    nb = copy.deepcopy(nb)
    checked = 0
    for key in VOLATILE_NOTEBOOK_KEYS:
        nb.get("metadata", {}).pop(key, None)
    for cell in nb.get("cells", []):
        meta = cell.setdefault("metadata", {})
        for key in VOLATILE_CELL_KEYS:
            meta.pop(key, None)
        if cell.get("cell_type") != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        if is_checked(cell):
            checked += 1
            cell["execution_count"] = checked
            cell["outputs"] = [_strip_output(o, checked) for o in cell.get("outputs", [])]
        else:
            cell["execution_count"] = None
            cell["outputs"] = []
    return nb


def dumps(nb):
    """Serialise like Jupyter does (1-space indent, sorted keys, final newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def process(path, check=False):
    """Strip one file in place (or only compare, if ``check``). True if it changed / would change."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = dumps(strip_notebook(json.loads(text)))
    if new == text:
        return False
    if not check:
        path.write_text(new, encoding="utf-8")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs stripping")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    changed = [p for p in paths if process(p, check=args.check)]
    for path in changed:
        print(f"{'needs stripping' if args.check else 'stripped'}: {path}")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
