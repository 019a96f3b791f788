import pytest

from paretobench.scoring import accuracy, infer_choice, vqa_correct

OPTS = {"A": "red", "B": "blue", "C": "green", "D": "light blue"}


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("A", "A"),
        ("(B)", "B"),
        ("The answer is C.", "C"),  # letter alone in a sentence
        ("C: green", "C"),
        ("A or B", None),  # two letters: no choice
        ("Answer: A. red, not B", "A"),  # two letters, so the option text decides
        ("red", "A"),  # option text
        ("It is green", "C"),
        ("light blue", None),  # 'blue' and 'light blue' both contained: ambiguous
        ("RED", "A"),  # text matching is case-insensitive
        ("a", None),  # letters are matched case-sensitively; 'a' is no option text
        ("Cannot determine the answer", None),  # refusal
        ("Z", None),
        ("I don't know", None),
        ("", None),
    ],
)
def test_mcq_exact_matching(answer, expected):
    assert infer_choice(answer, OPTS) == expected


def test_letter_beats_text():
    # the lone letter decides even if another option's text also appears
    assert infer_choice("B, not red", OPTS) == "B"


def test_two_option_question_ignores_missing_letters():
    assert infer_choice("C", {"A": "yes", "B": "no"}) is None
    assert infer_choice("no", {"A": "yes", "B": "no"}) == "B"


@pytest.mark.parametrize(
    "answer, refs, ok",
    [
        ("Stop", ["stop"], True),
        ("the stop sign", ["stop"], True),
        ("stops", ["stop"], False),
        ("New York.", ["new york", "nyc"], True),
        ("York", ["new york"], False),
    ],
)
def test_vqa_matching(answer, refs, ok):
    assert vqa_correct(answer, refs) is ok


def test_accuracy_overall_and_per_category():
    r = accuracy(["a", "a", "b", "b", "b", "b"], [True, False, True, True, True, False])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_category"] == {"a": 0.5, "b": 0.75}
    assert r["mean_of_categories"] == pytest.approx(0.625)
    assert r["n_per_category"] == {"a": 2, "b": 4}
