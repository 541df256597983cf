"""Tests of the "Fake or real?" quiz (koala_utils.quiz)."""

import math

import numpy as np
import pytest

from koala_utils import quiz as qz


def _items(n_fake=3, n_real=2):
    items = [qz.QuizItem(f"fake_{i}", np.full((4, 4, 3), 10 * i, np.uint8), True) for i in range(n_fake)]
    items += [qz.QuizItem(f"real_{i}", np.full((4, 4, 3), 200, np.uint8), False) for i in range(n_real)]
    return items


def _answers(fooled, n_fake, real_right=0, n_real=0):
    rows = [{"name": f"f{i}", "is_fake": True, "judged_real": i < fooled} for i in range(n_fake)]
    rows += [{"name": f"r{i}", "is_fake": False, "judged_real": i < real_right} for i in range(n_real)]
    return rows


def test_wilson_interval_9_of_20_by_hand():
    z = 1.959963984540054
    n, k = 20, 9
    p = k / n  # 0.45
    z2 = z * z  # 3.841459
    denominator = 1 + z2 / n  # 1.192073
    centre = (p + z2 / (2 * n)) / denominator  # (0.45 + 0.096036) / 1.192073 = 0.458056
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))  # 1.644169 * 0.121556 = 0.199857
    low, high = centre - half, centre + half
    assert (low, high) == pytest.approx((0.2582, 0.6579), abs=1e-4)

    result = qz.fooling_rate(_answers(9, 20, real_right=7, n_real=10))
    assert result["fooled"] == 9 and result["n_fake"] == 20
    assert result["rate"] == 0.45
    assert result["ci_low"] == pytest.approx(low, abs=1e-12)
    assert result["ci_high"] == pytest.approx(high, abs=1e-12)
    assert result["n_real"] == 10 and result["real_judged_real"] == 7
    assert result["real_judged_real_rate"] == pytest.approx(0.7)


def test_wilson_extremes_stay_in_unit_interval():
    low, high = qz.wilson_interval(0, 5)
    assert low == 0.0 and 0.0 < high < 1.0
    # k = n: centre + half = 1 exactly; centre - half = n / (n + z^2)
    low, high = qz.wilson_interval(5, 5)
    assert high == pytest.approx(1.0) and low == pytest.approx(5 / (5 + qz.Z_95**2))


def test_fooling_rate_without_fakes():
    result = qz.fooling_rate(_answers(0, 0, real_right=1, n_real=2))
    assert result["n_fake"] == 0 and result["fooled"] == 0
    assert math.isnan(result["rate"])
    assert (result["ci_low"], result["ci_high"]) == (0.0, 1.0)
    assert result["real_judged_real_rate"] == 0.5
    assert math.isnan(qz.fooling_rate([])["real_judged_real_rate"])


def test_paper_rate_constant():
    assert qz.PAPER_FOOLING_RATE == 0.4587


def _names(quiz):
    return [item.name for item in quiz.order]


def test_seeded_order_is_stable():
    a = qz.FakeOrRealQuiz(_items(10, 10), seed=3)
    b = qz.FakeOrRealQuiz(_items(10, 10), seed=3)
    c = qz.FakeOrRealQuiz(_items(10, 10), seed=4)
    assert _names(a) == _names(b)
    assert _names(a) != _names(c)
    assert sorted(_names(a)) == sorted(item.name for item in _items(10, 10))


def test_quiz_walkthrough():
    quiz = qz.FakeOrRealQuiz(_items(3, 2), seed=0)
    shown = []
    while quiz.current() is not None:
        item = quiz.current()
        shown.append(item.name)
        quiz.answer(judged_real=item.name in ("fake_0", "real_0"))
    assert shown == [item.name for item in quiz.order]
    assert quiz.done and quiz.position == 5
    with pytest.raises(RuntimeError):
        quiz.answer(True)
    result = quiz.results()
    assert (result["fooled"], result["n_fake"], result["real_judged_real"], result["n_real"]) == (1, 3, 1, 2)
    assert {"name", "is_fake", "judged_real", "timestamp"} <= set(quiz.answers[0])


def test_duplicate_names_rejected():
    item = qz.QuizItem("x", np.zeros((2, 2, 3), np.uint8), True)
    with pytest.raises(ValueError):
        qz.FakeOrRealQuiz([item, item])


def test_csv_round_trip_and_pooling(tmp_path):
    quiz = qz.FakeOrRealQuiz(_items(3, 2), seed=1)
    for i in range(len(quiz)):
        quiz.answer(i % 2 == 0)
    path = quiz.to_csv(tmp_path / "alice.csv")
    expected = [{k: a[k] for k in ("name", "is_fake", "judged_real")} for a in quiz.answers]
    assert qz.FakeOrRealQuiz.read_csv(path) == expected
    assert path.read_text().splitlines()[0] == "name,is_fake,judged_real"

    other = qz.FakeOrRealQuiz(_items(3, 2), seed=2)
    for _ in range(len(other)):
        other.answer(True)
    other.to_csv(tmp_path / "bob.csv")
    pooled = qz.load_answers([tmp_path / "alice.csv", tmp_path / "bob.csv"])
    assert len(pooled) == 10
    assert {a["participant"] for a in pooled} == {"alice", "bob"}
    result = qz.fooling_rate(pooled)
    alice_fooled = sum(a["judged_real"] for a in expected if a["is_fake"])
    assert result["n_fake"] == 6 and result["fooled"] == alice_fooled + 3


def test_csv_refuses_to_overwrite(tmp_path):
    quiz = qz.FakeOrRealQuiz(_items(1, 1))
    quiz.answer(True)
    path = tmp_path / "answers.csv"
    path.write_text("precious\n")
    with pytest.raises(FileExistsError, match="answers.csv"):
        quiz.to_csv(path)
    assert path.read_text() == "precious\n"
    quiz.to_csv(path, overwrite=True)
    assert len(qz.FakeOrRealQuiz.read_csv(path)) == 1


def test_read_csv_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,is_fake\nx,1\n")
    with pytest.raises(ValueError, match="bad.csv.*judged_real"):
        qz.FakeOrRealQuiz.read_csv(bad)
    bad.write_text("name,is_fake,judged_real\nx,1,maybe\n")
    with pytest.raises(ValueError, match="bad.csv, line 2"):
        qz.FakeOrRealQuiz.read_csv(bad)


def test_per_image_scores():
    answers = [
        {"name": "a", "is_fake": True, "judged_real": True},
        {"name": "a", "is_fake": True, "judged_real": False},
        {"name": "b", "is_fake": False, "judged_real": True},
        {"name": "b", "is_fake": False, "judged_real": True},
        {"name": "c", "is_fake": True, "judged_real": False},
        {"name": "d", "is_fake": True, "judged_real": True},
        {"name": "a", "is_fake": True, "judged_real": True},
    ]
    scores = qz.per_image_scores(answers)
    assert [s["name"] for s in scores] == ["b", "d", "a", "c"]
    assert scores[2] == {"name": "a", "is_fake": True, "n": 3, "judged_real_share": pytest.approx(2 / 3)}
    assert scores[-1]["judged_real_share"] == 0.0


def test_widget_click_simulation(tmp_path):
    quiz = qz.FakeOrRealQuiz(_items(2, 1), seed=0)
    loaded = []

    def loader(image):
        loaded.append(image)
        return image

    csv_path = tmp_path / "p1.csv"
    box = qz.quiz_widget(quiz, image_loader=loader, csv_path=csv_path)
    assert box.real_button.description == "Real" and box.fake_button.description == "Fake"
    assert box.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 of 3" in box.progress.value
    first = quiz.current().name
    box.real_button.click()
    assert quiz.position == 1 and quiz.answers[0]["name"] == first and quiz.answers[0]["judged_real"] is True
    assert "2 of 3" in box.progress.value
    box.fake_button.click()
    box.real_button.click()
    assert quiz.done and box.real_button.disabled and box.fake_button.disabled
    box.real_button.click()  # ignored once finished
    assert quiz.position == 3
    assert "Wilson" in box.result.value and "saved" in box.result.value
    assert [a["judged_real"] for a in qz.FakeOrRealQuiz.read_csv(csv_path)] == [True, False, True]
    assert len(loaded) == 3

    again = qz.FakeOrRealQuiz(_items(1, 0))
    box = qz.quiz_widget(again, image_loader=loader, csv_path=csv_path)
    box.fake_button.click()
    assert "Not saved" in box.result.value and "p1.csv" in box.result.value
