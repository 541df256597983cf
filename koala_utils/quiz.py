"""The "Fake or real?" user study of the paper (section 4.3), as plain Python.

Participants see real photos and colorized ones, one at a time in a random
order, and say for each whether it is a real photo. The paper reports that its
colorizations were judged real 45.87 % of the time (``PAPER_FOOLING_RATE``).

:class:`FakeOrRealQuiz` holds the state, :func:`fooling_rate` and
:func:`per_image_scores` analyse the answers (pooled from several participants
with :func:`load_answers`; all three live in :mod:`koala_utils.quiz_results`),
and :func:`quiz_widget` is a thin ipywidgets view for notebooks.
"""

import io
import random
import time
from dataclasses import dataclass
from typing import Any

from .quiz_results import (  # re-exported: quiz.fooling_rate and the rest keep working
    CSV_FIELDS,
    PAPER_FOOLING_RATE,
    Z_95,
    fooling_rate,
    format_result,
    load_answers,
    per_image_scores,
    read_answers,
    wilson_interval,
    write_answers,
)

__all__ = [
    "QuizItem", "FakeOrRealQuiz", "quiz_widget", "CSV_FIELDS", "PAPER_FOOLING_RATE", "Z_95", "fooling_rate",
    "format_result", "load_answers", "per_image_scores", "read_answers", "wilson_interval", "write_answers",
]


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
