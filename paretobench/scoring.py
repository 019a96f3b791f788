"""Scoring without an LLM judge, by VLMEvalKit's exact-matching rules (its ``can_infer``).

MCQ, first by option letter: punctuation ``.()[],:;!*#{}`` becomes spaces and the answer splits
into words. If exactly one option letter appears as a word, among the answer's last four words,
that is the choice (a letter early in a long answer is more likely an article or a list item
than a choice). If no letter appears but "Z" does, there is no choice; canned refusals are no
choice too. Failing those, "answer is X" (optionally "correct answer is **X**", any case) names
the choice. Then by option text: if exactly one option's text (lower-cased) is a substring of
the lower-cased answer, that option, unless the answer is more than twice as long as all the
options' texts together. Otherwise there is no choice and the answer counts as wrong.

VQA: the answer and each reference are normalised (lower case, punctuation and articles removed,
whitespace collapsed); the answer is right if it equals a reference, or, for a one-word
reference, if that word appears in it.
"""

from __future__ import annotations

import re
from collections import defaultdict

_PUNCT = ".()[],:;!*#{}"
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_API_FAILURE = "Failed to obtain answer via API"  # an API model's placeholder: no letter in it counts
_ANSWER_IS = re.compile(r"(?:correct\s+)?answer\s+is\s+\**([ABCD])\**", re.IGNORECASE)
_TAIL = 4  # a lone option letter counts only among the answer's last this many words
NO_CHOICE = "Z"
# bump when a rule above changes what counts as correct (part of every evaluation key); 2: the
# letter must be among the last four words, "answer is X", the length limit on text matching
SCORING_VERSION = 2


def infer_option_letter(answer: str, options: dict[str, str]) -> str | None:
    """The option letter the answer names (see the module's rules), ``"Z"`` for no choice, or None
    to fall back on the options' texts."""
    if _API_FAILURE in answer:
        return None
    if any(r in answer for r in _REFUSALS):
        return NO_CHOICE
    text = answer
    for c in _PUNCT:
        text = text.replace(c, " ")
    words = text.split()
    found = [k for k in options if k in words]
    if len(found) == 1 and words.index(found[0]) >= len(words) - _TAIL:
        return found[0]
    if not found and NO_CHOICE in words:
        return NO_CHOICE
    named = _ANSWER_IS.search(answer)
    if named and named.group(1).upper() in options:
        return named.group(1).upper()
    return None


def infer_option_text(answer: str, options: dict[str, str]) -> str | None:
    """The option whose text is contained in the answer, if exactly one is (and the answer is at
    most twice as long as the options' texts together)."""
    low = answer.lower()
    if len(low) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    found = [k for k, v in options.items() if str(v).lower() in low]
    return found[0] if len(found) == 1 else None


def infer_choice(answer: str, options: dict[str, str]) -> str | None:
    """The option letter ``answer`` chooses, or None when it chooses none (VLMEvalKit's ``can_infer``)."""
    answer = str(answer)
    choice = infer_option_letter(answer, options) or infer_option_text(answer, options)
    return None if choice == NO_CHOICE else choice


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NONWORD = re.compile(r"[^\w\s]")


def normalise_vqa(text: str) -> str:
    text = _NONWORD.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def vqa_correct(answer: str, references: list[str]) -> bool:
    got = normalise_vqa(answer)
    for ref in map(normalise_vqa, references):
        if got == ref or (ref and " " not in ref and ref in got.split()):
            return True
    return False


def is_correct(sample, prediction: str) -> bool:
    """Whether ``prediction`` answers ``sample`` (a ``paretobench.data.tsv.Sample``)."""
    if sample.is_mcq:
        return infer_choice(prediction, sample.options) == sample.answer
    return vqa_correct(prediction, sample.references)


def accuracy(categories: list[str], correct: list[bool]) -> dict:
    """Overall accuracy (mean over samples) and per-category accuracy, as fractions in [0, 1].

    ``accuracy`` is the mean over samples; ``mean_of_categories`` averages the categories
    equally (the paper's "Avg." column).
    """
    if len(categories) != len(correct):
        raise ValueError("categories and correct differ in length")
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for c, ok in zip(categories, correct):
        by_cat[c].append(bool(ok))
    per = {c: sum(v) / len(v) for c, v in sorted(by_cat.items())}
    return {
        "accuracy": sum(map(bool, correct)) / len(correct) if correct else float("nan"),
        "mean_of_categories": sum(per.values()) / len(per) if per else float("nan"),
        "per_category": per,
        "n": len(correct),
        "n_per_category": {c: len(v) for c, v in sorted(by_cat.items())},
    }
