"""Prompts built the way VLMEvalKit builds them for image MCQ datasets."""

from __future__ import annotations

MCQ_SUFFIX = "Please select the correct answer from the options above. \n"


def build_prompt(question: str, options: dict[str, str], hint: str | None = None) -> str:
    """VLMEvalKit's ``ImageMCQDataset.build_prompt``: optional hint, the question, then the
    lettered options and the selection instruction. Without options it is a plain VQA prompt."""
    prompt = f"Hint: {hint}\n" if hint else ""
    prompt += f"Question: {question}\n"
    if options:
        prompt += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items()) + MCQ_SUFFIX
    return prompt
