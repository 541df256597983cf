"""A run folder's ``config.json``: what a run was trained with, and resume checks.

Resuming a run (``koala train`` into a folder that already holds one) with a
different learning rate, image size, records folder, loss or backbone would
silently mix two experiments in one log and one set of weights. So
:func:`check_resume` compares the settings asked for with those recorded and
refuses, naming the setting, unless ``force`` is set. A forced change is kept
as a new *phase*: ``config.json`` holds the settings in force now at its top
level and, under ``"phases"``, every earlier record unchanged, each with the
epoch it started at.

Nothing here needs a deep-learning framework.
"""

import json
import math
import os
from pathlib import Path

from ._io import write_json_atomic

CONFIG = "config.json"
# Settings a resumed run must keep (what the weights, the optimizer state and the log mean depends on them).
GUARDED = ("records_dir", "image_size", "learning_rate", "loss", "backbone", "embed_dim")
# What a record written before a setting existed meant.
DEFAULTS = {"loss": "mse"}


class SettingsDriftError(ValueError):
    """A resumed run was asked to train with other settings than it was started with."""


def read(run_dir):
    """The recorded config of a run folder, or ``{}`` when it has none.

    Raises
    ------
    ValueError
        ``config.json`` exists but is not a JSON object (the message names it).
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable run config ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a run config (a JSON object)")
    return record


def epochs_done(run_dir):
    """Epochs the run's resume point holds (0 when there is none)."""
    meta = Path(run_dir) / "backup" / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def has_progress(run_dir):
    """Whether the folder holds a run to resume (a backup, a log or a saved model)."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in ("backup", "log.csv", "last.keras", "best.keras"))


def _same(key, old, new):
    if key == "records_dir":
        return os.path.realpath(str(old)) == os.path.realpath(str(new))
    if key == "learning_rate":
        return math.isclose(float(old), float(new), rel_tol=1e-9, abs_tol=0.0)
    return old == new


def differences(recorded, settings):
    """The guarded settings that differ: a list of ``(key, recorded, asked)``.

    A key absent from ``settings`` is not compared; one absent from
    ``recorded`` takes its old meaning from :data:`DEFAULTS` (else it is not
    compared: the record predates it).
    """
    changed = []
    for key in GUARDED:
        if key not in settings:
            continue
        old = recorded.get(key, DEFAULTS.get(key))
        if old is None:
            continue
        if not _same(key, old, settings[key]):
            changed.append((key, old, settings[key]))
    return changed


def check_resume(run_dir, settings, force=False):
    """Compare the settings asked for with the run folder's record.

    Parameters
    ----------
    run_dir : path
        The run folder (may not exist yet).
    settings : dict
        The new run's config (JSON-serialisable), with the :data:`GUARDED`
        keys it knows.
    force : bool
        Allow changes: they are recorded as a new phase.

    Returns
    -------
    dict
        The config to write (with :func:`write`): ``settings`` for a new run
        or an unchanged resume (earlier phases kept), else ``settings`` plus
        ``"phases"``, the earlier records, the last one ending where this one
        starts.

    Raises
    ------
    SettingsDriftError
        A guarded setting differs and ``force`` is not set. The message names
        every such setting, its recorded and asked values, and the folder.
    """
    recorded = read(run_dir) if has_progress(run_dir) else {}
    if not recorded:
        return dict(settings)
    phases = list(recorded.get("phases", []))
    changed = differences(recorded, settings)
    if not changed:
        return {**settings, "phases": phases} if phases else dict(settings)
    if not force:
        listed = "; ".join(f"{key}: recorded {old!r}, asked {new!r}" for key, old, new in changed)
        raise SettingsDriftError(
            f"{run_dir}: this run was started with other settings ({listed}). Resume with the recorded settings, "
            "use a new run folder, or pass --force (force=True) to continue with the new ones as a new phase."
        )
    previous = {k: v for k, v in recorded.items() if k != "phases"}
    previous.setdefault("from_epoch", 0)
    start = epochs_done(run_dir)
    return {**settings, "from_epoch": start, "phases": [*phases, previous]}


def write(run_dir, config):
    """Write ``config.json`` atomically (a kill mid-write leaves the old one whole)."""
    write_json_atomic(Path(run_dir) / CONFIG, config)
