"""Read VLMEvalKit-format TSV benchmarks (ours and real users' files).

A row is one question: ``index``, ``image`` (base64, or a short string naming another row's
``index`` whose image it shares), ``question``, optional ``hint``, option columns ``A``..``Z``
(empty or NaN = absent), ``answer`` (an option letter for MCQ, reference text for VQA; several
references may be separated by ``|`` or given as a JSON/Python list), ``category``, ``split``.
Any other column is kept in ``Sample.extra``.

The whole file is validated before anything is returned, so a malformed file fails with an
error naming the file and row, and nothing downstream runs or writes.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import hashlib
import io
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from paretobench.data.prompt import build_prompt

REQUIRED = ("index", "question", "answer")
OPTION_LETTERS = tuple(string.ascii_uppercase)
_NAN = {"", "nan", "NaN", "NAN", "none", "None"}


class DatasetError(ValueError):
    """A benchmark file is missing or malformed."""


@dataclass
class Sample:
    index: str
    question: str
    answer: str
    options: dict[str, str]
    image_b64: str | None
    category: str = ""
    split: str = ""
    hint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_mcq(self) -> bool:
        return bool(self.options)

    @property
    def references(self) -> list[str]:
        """Reference answers of a VQA sample."""
        a = self.answer.strip()
        if a.startswith("["):
            try:
                return [str(x) for x in ast.literal_eval(a)]
            except (ValueError, SyntaxError):
                pass
        return [x for x in a.split("|")] if "|" in a else [a]

    def prompt(self) -> str:
        return build_prompt(self.question, self.options, self.hint)

    def image(self):
        """The decoded PIL image (RGB)."""
        from PIL import Image

        if self.image_b64 is None:
            raise DatasetError(f"sample {self.index} has no image")
        return Image.open(io.BytesIO(base64.b64decode(self.image_b64))).convert("RGB")


def _isnan(v: str | None) -> bool:
    return v is None or v.strip() in _NAN


def read_tsv(path: str | Path, *, limit: int | None = None) -> list[Sample]:
    """Parse and validate one TSV. ``limit`` keeps the first rows (image references to rows
    beyond it still resolve). A file without questions, or a limit keeping none, is an error:
    an accuracy over no questions means nothing."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError(f"{path}: empty file") from None
        except csv.Error as e:
            raise DatasetError(f"{path}: row 1 (header): {e}") from None
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; header is {header}")
        if "image" not in header:
            raise DatasetError(f"{path}: no 'image' column (base64 images are required)")
        rows = []
        try:
            for lineno, values in enumerate(reader, start=2):
                if not values:
                    continue
                if len(values) != len(header):
                    raise DatasetError(
                        f"{path}: row {lineno}: expected {len(header)} tab-separated fields, got {len(values)}"
                    )
                rows.append((lineno, dict(zip(header, values))))
        except csv.Error as e:
            raise DatasetError(f"{path}: row {reader.line_num}: {e}") from None
    if not rows:
        raise DatasetError(f"{path}: no questions (a header and no rows)")
    if limit is not None and limit < 1:
        raise DatasetError(f"{path}: limit {limit} keeps no questions")

    by_index: dict[str, str] = {}
    for lineno, r in rows:
        idx = r["index"].strip()
        if not idx:
            raise DatasetError(f"{path}: row {lineno}: empty index")
        if idx in by_index:
            raise DatasetError(f"{path}: row {lineno}: duplicate index {idx!r}")
        by_index[idx] = r["image"]

    samples = []
    option_cols = [c for c in header if c in OPTION_LETTERS]
    known = set(REQUIRED) | {"image", "hint", "category", "split"} | set(option_cols)
    for lineno, r in rows[: limit if limit is not None else len(rows)]:
        image = _resolve_image(path, lineno, r["image"], by_index)
        options = {c: r[c] for c in option_cols if not _isnan(r[c])}
        answer = r["answer"]
        if _isnan(answer):
            raise DatasetError(f"{path}: row {lineno}: no answer")
        if options and answer.strip() not in options:
            raise DatasetError(
                f"{path}: row {lineno}: answer {answer!r} is not one of the options {sorted(options)}"
            )
        samples.append(
            Sample(
                index=r["index"].strip(),
                question=r["question"],
                answer=answer.strip() if options else answer,
                options=options,
                image_b64=image,
                category=r.get("category", "") if not _isnan(r.get("category")) else "",
                split=r.get("split", "") if not _isnan(r.get("split")) else "",
                hint=None if _isnan(r.get("hint")) else r["hint"],
                extra={k: v for k, v in r.items() if k not in known},
            )
        )
    return samples


def _resolve_image(path: Path, lineno: int, value: str, by_index: dict[str, str]) -> str:
    """Follow VLMEvalKit's image de-duplication: a short value names another row's index."""
    seen = set()
    while len(value) <= 64 and value.strip() in by_index and value.strip() not in seen:
        seen.add(value.strip())
        value = by_index[value.strip()]
    if len(value) <= 64:
        raise DatasetError(f"{path}: row {lineno}: image {value!r} is neither base64 data nor a known index")
    try:
        base64.b64decode(value[:1024] + "=" * (-len(value[:1024]) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DatasetError(f"{path}: row {lineno}: image column is not valid base64") from None
    return value


def file_fingerprint(paths) -> str:
    """sha256 over the files' names and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
