"""The answers of the "Fake or real?" quiz: CSV files on disk, and what they say.

One CSV per participant (:func:`write_answers`, :func:`read_answers`), pooled
with :func:`load_answers`; :func:`fooling_rate` (with its Wilson interval) and
:func:`per_image_scores` analyse them as the paper's section 4.3 does, and
:func:`format_result` says it in one line. :mod:`koala_utils.quiz` holds the
quiz itself and re-exports all of these.
"""

import csv
import io
import math
from pathlib import Path

PAPER_FOOLING_RATE = 0.4587
Z_95 = 1.959963984540054
CSV_FIELDS = ("name", "is_fake", "judged_real")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def write_answers(answers, path, overwrite=False):
    """Write answers as a CSV file; see :meth:`FakeOrRealQuiz.to_csv`."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for answer in answers:
        writer.writerow([answer["name"], int(bool(answer["is_fake"])), int(bool(answer["judged_real"]))])
    try:
        with open(path, "w" if overwrite else "x", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())
    except FileExistsError:
        raise FileExistsError(f"{path}: already exists; pass overwrite=True to replace it") from None
    return path


def _parse_bool(text, path, line):
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{path}, line {line}: {text!r} is not a boolean")


def read_answers(path):
    """Read a CSV of answers (columns ``name``, ``is_fake``, ``judged_real``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    list of dict

    Raises
    ------
    ValueError
        If a column is missing or a value is not a boolean; the message names
        the file.
    """
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [field for field in CSV_FIELDS if field not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        return [
            {
                "name": row["name"],
                "is_fake": _parse_bool(row["is_fake"], path, line),
                "judged_real": _parse_bool(row["judged_real"], path, line),
            }
            for line, row in enumerate(reader, start=2)
        ]


def load_answers(paths):
    """Pool the answers of several participants.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        One CSV per participant.

    Returns
    -------
    list of dict
        All rows, each with a ``participant`` key (the file's stem).
    """
    pooled = []
    for path in paths:
        participant = Path(path).stem
        pooled.extend({**answer, "participant": participant} for answer in read_answers(path))
    return pooled


def wilson_interval(successes, n, confidence=0.95):
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest``).

    Unlike the normal ("Wald") interval it stays inside [0, 1] and behaves for
    small ``n`` and for proportions near 0 or 1.

    Parameters
    ----------
    successes, n : int
    confidence : float
        Confidence level of the interval.

    Returns
    -------
    (low, high) : tuple of float
        ``(0.0, 1.0)`` when ``n == 0``.
    """
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def fooling_rate(answers):
    """How often colorized images were taken for real photos.

    Parameters
    ----------
    answers : iterable of dict
        With ``is_fake`` and ``judged_real`` (bool) keys.

    Returns
    -------
    dict
        ``fooled`` (fake images judged real), ``n_fake``, ``rate`` =
        fooled / n_fake (nan when no fake image was answered), ``ci_low`` and
        ``ci_high``: the 95 % Wilson score interval of the rate
        (:func:`wilson_interval`). As a sanity check of the participants:
        ``n_real``, ``real_judged_real`` and ``real_judged_real_rate`` for the
        real photos.
    """
    answers = list(answers)
    fake = [bool(a["judged_real"]) for a in answers if a["is_fake"]]
    real = [bool(a["judged_real"]) for a in answers if not a["is_fake"]]
    fooled, n_fake = sum(fake), len(fake)
    low, high = wilson_interval(fooled, n_fake)
    return {
        "fooled": fooled,
        "n_fake": n_fake,
        "rate": fooled / n_fake if n_fake else math.nan,
        "ci_low": low,
        "ci_high": high,
        "n_real": len(real),
        "real_judged_real": sum(real),
        "real_judged_real_rate": sum(real) / len(real) if real else math.nan,
    }


def per_image_scores(answers):
    """Share of "real" verdicts per image, as in the paper's Fig. 6.

    Parameters
    ----------
    answers : iterable of dict
        With ``name``, ``is_fake`` and ``judged_real`` keys.

    Returns
    -------
    list of dict
        One per image: ``name``, ``is_fake``, ``n`` (answers) and
        ``judged_real_share``; sorted by share, highest first (ties by name).
    """
    groups = {}
    for answer in answers:
        entry = groups.setdefault(answer["name"], {"is_fake": bool(answer["is_fake"]), "n": 0, "real": 0})
        entry["n"] += 1
        entry["real"] += int(bool(answer["judged_real"]))
    scores = [
        {"name": name, "is_fake": g["is_fake"], "n": g["n"], "judged_real_share": g["real"] / g["n"]}
        for name, g in groups.items()
    ]
    return sorted(scores, key=lambda s: (-s["judged_real_share"], s["name"]))


def format_result(result):
    """One line describing :func:`fooling_rate` output, with the paper's figure."""
    if not result["n_fake"]:
        return "No colorized image answered yet."
    return (
        f"Colorized images judged real: {result['fooled']} of {result['n_fake']} = {result['rate']:.1%} "
        f"(95 % Wilson interval {result['ci_low']:.1%} to {result['ci_high']:.1%}; "
        f"paper: {PAPER_FOOLING_RATE:.2%}). Real photos judged real: {result['real_judged_real']} of "
        f"{result['n_real']}."
    )
