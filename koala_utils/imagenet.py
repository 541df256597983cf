"""ImageNet validation labels, class names and top-k accuracy.

The offline folder ``imagenet_val_1300`` holds the photos, ``labels_dataset.txt``
(lines ``./data/ILSVRC2012_val_00000347.JPEG, 472``, labels 0-999 in sorted-wnid
order) and ``synset_words.txt`` (lines ``n01440764 tench, Tinca tinca``).
"""

from pathlib import Path

import numpy as np

LABELS_FILE = "labels_dataset.txt"
SYNSETS_FILE = "synset_words.txt"
NUM_CLASSES = 1000


def load_val_labels(folder):
    """Photos of a validation folder with their labels.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder holding the photos and ``labels_dataset.txt``.

    Returns
    -------
    list of (pathlib.Path, int)
        ``(folder / basename, label)`` in the file's order; labels in [0, 999].
    """
    folder = Path(folder)
    items = []
    for number, line in enumerate((folder / LABELS_FILE).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, label = line.rpartition(",")
        if not sep:
            raise ValueError(f"{folder / LABELS_FILE}:{number}: expected 'path, label', got {line!r}")
        label = int(label)
        if not 0 <= label < NUM_CLASSES:
            raise ValueError(f"{folder / LABELS_FILE}:{number}: label {label} outside 0-{NUM_CLASSES - 1}")
        items.append((folder / Path(name.strip()).name, label))
    return items


def _synsets(folder):
    """``[(wnid, words)]`` sorted by wnid, so that the list index is the label."""
    pairs = []
    for line in (Path(folder) / SYNSETS_FILE).read_text().splitlines():
        if line.strip():
            wnid, _, words = line.strip().partition(" ")
            pairs.append((wnid, words.strip()))
    return sorted(pairs)


def class_names(folder, short=False):
    """Human-readable names of the 1000 classes, indexed by label.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder holding ``synset_words.txt``.
    short : bool
        Keep only the first synonym (``"tench"`` instead of
        ``"tench, Tinca tinca"``).

    Returns
    -------
    list of str
        ``names[label]``, in sorted-wnid order.
    """
    names = [words for _, words in _synsets(folder)]
    if short:
        names = [words.split(",")[0].strip() for words in names]
    return names


def top_k_accuracy(logits, labels, k=1):
    """Share of samples whose label is among the k highest scores.

    Parameters
    ----------
    logits : array_like, shape (N, C)
        Scores (logits or probabilities).
    labels : array_like of int, shape (N,)
        True classes in [0, C).
    k : int
        How many top guesses count.

    Returns
    -------
    float
        In [0, 1]; 0.0 for N = 0.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} do not match")
    if labels.size == 0:
        return 0.0
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))
