"""environment.yml (conda users) and binder/environment.yml (Binder) hold what pyproject.toml's extras hold.

Every requirement of the extras each file stands for appears in it under the same name, with the same version
specifier; the files may list more (conda-forge builds of the same packages, ``-e .``).
"""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# What each file is for: environment.yml is the whole contributor set (the GPU TensorFlow build); Binder runs the
# notebooks on a CPU.
FILES = {
    "environment.yml": ("tf", "jax", "video", "colorize", "notebooks", "dev", "e2e"),
    "binder/environment.yml": ("tf-cpu", "notebooks"),
}
LINE = re.compile(r"^\s*-\s+([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*([<>=!~][^#\s]*)?\s*(#.*)?$")


def _normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements(extras, python):
    """``{name: specifier}`` for the base dependencies and ``extras`` on Python ``python`` ("3.11"),
    self-references (koalarization[x]) expanded."""
    out, todo, seen = {}, [None, *extras], set()  # None: the base dependencies
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"python_version": python, "extra": ""}):
                continue
            if _normalise(requirement.name) == "koalarization":
                todo += sorted(requirement.extras)
            else:
                out[_normalise(requirement.name)] = str(requirement.specifier)
    return out


def environment_requirements(path):
    """``{name: specifier}`` of a conda environment file's packages, conda and pip ones alike (python and pip
    themselves left out)."""
    out = {}
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        if not match or match.group(1) in ("python", "pip", "-e"):
            continue
        specifier = str(Requirement(match.group(1) + (match.group(2) or "")).specifier)
        out[_normalise(match.group(1))] = specifier
    return out


@pytest.mark.parametrize("name", list(FILES))
def test_environment_file_holds_what_pyproject_holds(name):
    python = re.search(r"^\s*-\s+python=(\d+\.\d+)", (ROOT / name).read_text(), re.M).group(1)
    wanted = pyproject_requirements(FILES[name], python)
    have = environment_requirements(ROOT / name)
    assert len(have) >= 10, f"{name}: could not read its packages"
    missing = sorted(set(wanted) - set(have))
    assert not missing, f"{name} lacks {missing} (pyproject.toml extras {FILES[name]})"
    differ = {package: (have[package], wanted[package]) for package in wanted if have[package] != wanted[package]}
    assert not differ, f"{name}: version specifiers differ from pyproject.toml (file, pyproject): {differ}"


def test_the_parser_reads_conda_and_pip_lines(tmp_path):
    path = tmp_path / "environment.yml"
    path.write_text("dependencies:\n  - python=3.11            # x\n  - pip\n  - numpy>=1.26   # arrays\n"
                    "  - pip:\n      - keras>=3.5,<3.16   # Keras 3\n      - scikit_video\n      - -e .\n")
    assert environment_requirements(path) == {"numpy": ">=1.26", "keras": "<3.16,>=3.5", "scikit-video": ""}
