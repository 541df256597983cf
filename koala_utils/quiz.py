"""The "Fake or real?" user study of the paper (section 4.3), as plain Python.

Participants see real photos and colorized ones, one at a time in a random
order, and say for each whether it is a real photo. The paper reports that its
colorizations were judged real 45.87 % of the time (``PAPER_FOOLING_RATE``).

:class:`FakeOrRealQuiz` holds the state, :func:`fooling_rate` and
:func:`per_image_scores` analyse the answers (pooled from several participants
with :func:`load_answers`), and :func:`quiz_widget` is a thin ipywidgets view
for notebooks.
"""

import csv
import io
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAPER_FOOLING_RATE = 0.4587
Z_95 = 1.959963984540054
CSV_FIELDS = ("name", "is_fake", "judged_real")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass
class QuizItem:
    """One image of the quiz.

    Attributes
    ----------
    name : str
        Unique name, used to pool answers across participants.
    image : str, os.PathLike or ndarray
        The image file, or an RGB uint8 array of shape (H, W, 3).
    is_fake : bool
        True for a colorized image, False for a real colour photo.
    """

    name: str
    image: Any
    is_fake: bool


class FakeOrRealQuiz:
    """One participant's run through the quiz.

    Parameters
    ----------
    items : iterable of QuizItem
    seed : int
        The items are shuffled with ``random.Random(seed)``: the same seed
        always gives the same order.

    Attributes
    ----------
    order : list of QuizItem
        The items in the order they are shown.
    answers : list of dict
        One per answered item: ``name``, ``is_fake``, ``judged_real`` and
        ``timestamp`` (seconds since the epoch).
    """

    def __init__(self, items, seed=0):
        self.items = list(items)
        names = [item.name for item in self.items]
        if len(set(names)) != len(names):
            raise ValueError("quiz item names must be unique")
        self.seed = seed
        self.order = list(self.items)
        random.Random(seed).shuffle(self.order)
        self.answers = []

    def __len__(self):
        return len(self.order)

    @property
    def position(self):
        """Number of items answered so far."""
        return len(self.answers)

    @property
    def done(self):
        """True once every item is answered."""
        return self.position >= len(self.order)

    def current(self):
        """The item to show now, or None when the quiz is finished."""
        return None if self.done else self.order[self.position]

    def answer(self, judged_real):
        """Record the participant's verdict on the current item and move on.

        Parameters
        ----------
        judged_real : bool
            True if the participant thinks the image is a real photo.

        Returns
        -------
        dict
            The recorded answer.

        Raises
        ------
        RuntimeError
            If the quiz is already finished.
        """
        item = self.current()
        if item is None:
            raise RuntimeError("the quiz is finished; no image left to answer")
        record = {"name": item.name, "is_fake": bool(item.is_fake), "judged_real": bool(judged_real)}
        record["timestamp"] = time.time()
        self.answers.append(record)
        return record

    def results(self):
        """:func:`fooling_rate` of the answers so far."""
        return fooling_rate(self.answers)

    def to_csv(self, path, overwrite=False):
        """Write the answers as ``name,is_fake,judged_real`` rows (booleans as 1/0).

        Parameters
        ----------
        path : str or os.PathLike
        overwrite : bool
            Replace an existing file. By default an existing file is kept.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        """
        return write_answers(self.answers, path, overwrite=overwrite)

    @staticmethod
    def read_csv(path):
        """Read answers written by :meth:`to_csv`.

        Returns
        -------
        list of dict
            ``name`` (str), ``is_fake`` and ``judged_real`` (bool).
        """
        return read_answers(path)


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


def _png_bytes(rgb, max_side=512):
    import numpy as np
    from PIL import Image

    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    img.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def quiz_widget(quiz, image_loader=None, csv_path=None):
    """An ipywidgets view of a :class:`FakeOrRealQuiz`.

    Parameters
    ----------
    quiz : FakeOrRealQuiz
    image_loader : callable, optional
        ``image_loader(item.image) -> ndarray of uint8, shape (H, W, 3)``;
        :func:`koala_utils.images.load_image` by default.
    csv_path : str or os.PathLike, optional
        Where the answers are saved when the quiz ends (never overwritten: an
        existing file is reported in the result area instead).

    Returns
    -------
    ipywidgets.VBox
        Children: the image, a row with the "Real" and "Fake" buttons, the
        progress label and the result area. The same widgets are also the
        attributes ``image``, ``real_button``, ``fake_button``, ``progress`` and
        ``result`` of the returned box.
    """
    import ipywidgets as widgets

    if image_loader is None:
        from koala_utils.images import load_image as image_loader

    image = widgets.Image(format="png")
    real_button = widgets.Button(description="Real", button_style="success")
    fake_button = widgets.Button(description="Fake", button_style="danger")
    progress = widgets.Label()
    result = widgets.HTML()

    def refresh():
        item = quiz.current()
        if item is None:
            real_button.disabled = fake_button.disabled = True
            progress.value = f"Done: {quiz.position} of {len(quiz)} answered."
            message = format_result(quiz.results())
            if csv_path is not None:
                try:
                    message += f" Answers saved to {quiz.to_csv(csv_path)}."
                except FileExistsError as exc:
                    message += f" Not saved: {exc}"
            result.value = f"<p>{message}</p>"
            return
        image.value = _png_bytes(image_loader(item.image))
        progress.value = f"Image {quiz.position + 1} of {len(quiz)}: a real photo, or colorized?"

    def on_click(judged_real):
        def handler(_button):
            if not quiz.done:
                quiz.answer(judged_real)
                refresh()

        return handler

    real_button.on_click(on_click(True))
    fake_button.on_click(on_click(False))
    refresh()
    box = widgets.VBox([image, widgets.HBox([real_button, fake_button]), progress, result])
    box.image, box.real_button, box.fake_button, box.progress, box.result = (
        image,
        real_button,
        fake_button,
        progress,
        result,
    )
    return box
