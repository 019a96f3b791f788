import pytest

from paretobench.scoring import accuracy, infer_choice, vqa_correct

OPTS = {"A": "red", "B": "blue", "C": "green", "D": "light blue"}
# answers a VLM gives, for the parity check against VLMEvalKit below
PREDICTIONS = ["A", "(B)", "The answer is C.", "C: green", "A or B", "Answer: A. red, not B", "red", "It is green",
               "light blue", "RED", "a", "Cannot determine the answer", "Z", "I don't know", "",
               "B is right because the square is on the left", "B is right because the square is red",
               "I pick the option B", "so the answer is b, clearly", "the answer is c", "red " * 11, "red " * 12,
               "Looking at it, the correct answer is **D**, since the sky is light blue and clear today",
               "Failed to obtain answer via API: A", "B, not red", "**C**", "Option D: light blue", "A) red B) blue",
               "It is neither red nor green.", "Answer: D", "D. light blue is the colour of the bar"]  # fmt: skip


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
        # a lone letter counts among the last four words only; earlier, the other rules decide
        ("B is right because the square is on the left", None),
        ("B is right because the square is red", "A"),  # then the text
        ("I pick the option B", "B"),
        ("Looking at it, the correct answer is **D**, since the sky is light blue and clear today", "D"),
        ("c", None),  # a lone lower-case letter is no option letter, and 'c' is no option text
        ("the answer is c", "C"),  # but "answer is X" takes any case
        ("so the answer is b, clearly", "B"),  # "answer is X" in any case
        # text matching refuses an answer over twice as long as the options' texts (22 characters)
        ("red " * 11, "A"),
        ("red " * 12, None),
        ("Failed to obtain answer via API: A", None),  # the placeholder's letter does not count
    ],
)
def test_mcq_exact_matching(answer, expected):
    assert infer_choice(answer, OPTS) == expected


def test_agrees_with_vlmevalkit_where_it_is_installed():
    """The same predictions through VLMEvalKit's own ``can_infer``: in the harness environment
    (``make test-harness``, where it is required); skipped where VLMEvalKit is not installed."""
    from harness_checks import harness

    can_infer = harness("vlmeval.utils.matching_util").can_infer
    for answer in PREDICTIONS:
        theirs = can_infer(answer, dict(OPTS))
        assert infer_choice(answer, OPTS) == (None if theirs in (False, "Z") else theirs), answer


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
