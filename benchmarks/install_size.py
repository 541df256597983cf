"""Install size: a fresh venv with only the ``colorize`` extra against a fresh venv with the full install.

    python benchmarks/install_size.py [--json FILE] [--without-video]

Builds the venvs under benchmarks/.cache with ``pip install ".[EXTRA]"`` (from PyPI; rebuilt
when pyproject.toml changes) and measures each of them two ways in the same run:

- **installed files**: the bytes of the files that each distribution's RECORD lists (what
  pip wrote), pip and setuptools left out (every venv has them);
- **du**: ``du -sk`` of the whole venv (bytecode caches, pip and setuptools, file-system
  blocks).

Target (issue 15): colorize / full <= 0.25, both ways, with the full install being
``.[tf-cpu,video]``, the README's "full install": like the light one, it runs ``koala
colorize`` and ``koala colorize-video``. ``--without-video`` also builds ``.[tf-cpu]``, a
full install without the video libraries (a figure, not the target). Does not touch the
project's own .venv. Not part of run_all.py (it downloads).
"""

import hashlib
import json
import shutil
import subprocess
import sys
import time

import _common

FULL = "tf-cpu,video"  # the README's full install
BARE = "tf-cpu"  # the same without the video libraries (--without-video)
LIGHT = "colorize"
TOOLS = {"pip", "setuptools", "wheel"}  # in every venv; not part of what an extra brings

_RECORD_SIZES = """
import importlib.metadata as m, json, re
out = {}
for d in m.distributions():
    name = re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()
    out[name] = [d.version, sum(f.size or 0 for f in d.files or [])]
print(json.dumps(out))
"""


def venv_for(extra):
    """A venv under the cache with ``.[extra]`` installed (non-editable, as a user gets it); its folder."""
    venv = _common.CACHE / f"venv_{extra.replace(',', '_')}"
    stamp = venv / ".koala-pyproject-sha256"
    wanted = hashlib.sha256((_common.ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{_common.ROOT}[{extra}]"],
                   check=True)
    stamp.write_text(wanted)
    return venv


def record_sizes(venv):
    """``{distribution: (version, bytes)}`` from the RECORD files of everything installed in ``venv``."""
    out = subprocess.run([str(venv / "bin" / "python"), "-c", _RECORD_SIZES], capture_output=True, text=True,
                         check=True).stdout
    return {name: (version, size) for name, (version, size) in json.loads(out).items()}


def du_bytes(path):
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) * 1024


def measure(extras=(LIGHT, FULL)):
    """``{extra: {"dists": {name: (version, bytes)}, "files_mb", "du_mb"}}`` for fresh venvs of ``extras``."""
    out = {}
    for extra in extras:
        venv = venv_for(extra)
        dists = record_sizes(venv)
        out[extra] = {"dists": dists, "du_mb": du_bytes(venv) / 1e6,
                      "files_mb": sum(size for name, (_, size) in dists.items() if name not in TOOLS) / 1e6}
    return out


def run(without_video=False):
    extras = (LIGHT, FULL) + ((BARE,) if without_video else ())
    sizes = measure(extras)
    light, full = sizes[LIGHT], sizes[FULL]
    names = sorted((set(light["dists"]) | set(full["dists"])) - TOOLS,
                   key=lambda n: -max(light["dists"].get(n, (0, 0))[1], full["dists"].get(n, (0, 0))[1]))
    rows = []
    for name in names:
        cells = [light["dists"].get(name), full["dists"].get(name)]
        if max(c[1] if c else 0 for c in cells) < 1e6:
            continue  # the table lists distributions of 1 MB or more; the totals count all
        rows.append([name, *(f"{c[1] / 1e6:.1f} ({c[0]})" if c else "" for c in cells)])
    rows.append(["**installed files, total**", f"**{light['files_mb']:.1f}**", f"**{full['files_mb']:.1f}**"])
    rows.append(["**du of the venv**", f"**{light['du_mb']:.1f}**", f"**{full['du_mb']:.1f}**"])
    ratio_files, ratio_du = light["files_mb"] / full["files_mb"], light["du_mb"] / full["du_mb"]
    figures = {"colorize_mb": light["files_mb"], "full_mb": full["files_mb"], "ratio": ratio_files,
               "colorize_du_mb": light["du_mb"], "full_du_mb": full["du_mb"], "ratio_du": ratio_du}
    notes = [f"installed files (RECORD, without pip and setuptools): .[{LIGHT}] {light['files_mb']:.1f} MB, "
             f".[{FULL}] {full['files_mb']:.1f} MB, ratio {ratio_files:.3f}",
             f"du of the fresh venvs: {light['du_mb']:.1f} MB and {full['du_mb']:.1f} MB, ratio {ratio_du:.3f}",
             f"the table lists distributions of 1 MB or more; .[{LIGHT}] holds "
             f"{', '.join(sorted(set(light['dists']) - TOOLS))}"]
    if without_video:
        bare = sizes[BARE]
        figures.update(tf_cpu_mb=bare["files_mb"], tf_cpu_du_mb=bare["du_mb"],
                       ratio_without_video=light["files_mb"] / bare["files_mb"],
                       ratio_without_video_du=light["du_mb"] / bare["du_mb"])
        notes.append(f"against .[{BARE}], a full install without the video libraries (it cannot run koala "
                     f"colorize-video, the light one can): {bare['files_mb']:.1f} MB installed files (ratio "
                     f"{figures['ratio_without_video']:.3f}), {bare['du_mb']:.1f} MB du "
                     f"(ratio {figures['ratio_without_video_du']:.3f})")
    targets = [_common.target(f"install size .[{LIGHT}] / .[{FULL}], installed files", ratio_files, "<=", 0.25),
               _common.target(f"install size .[{LIGHT}] / .[{FULL}], du of the venvs", ratio_du, "<=", 0.25)]
    return {
        "name": "install_size",
        "title": "Install size, fresh venvs (MB; version in brackets)",
        "headers": ["distribution", f".[{LIGHT}]", f".[{FULL}]"],
        "rows": rows,
        "figures": figures,
        "targets": targets,
        "notes": notes,
        "software": f"Python {sys.version.split()[0]}, pip install from PyPI on {time.strftime('%Y-%m-%d')}",
    }


def main(argv=None):
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--without-video", action="store_true", help=f"also measure .[{BARE}]")
    args = p.parse_args(argv)
    started = time.perf_counter()
    return _common.finish(run(args.without_video), args, started)


if __name__ == "__main__":
    main()
