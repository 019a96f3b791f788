"""``synth8``: a deterministic synthetic VQA benchmark in VLMEvalKit's TSV format.

Eight question families mirror the skills of the benchmarks the VisPCO paper evaluates on
(attribute recognition, fine-grained perception, counting, spatial reasoning, hallucination
checks, chart reading and two kinds of OCR). Every image is drawn from a *scene*: a list of
items (shapes, bars, characters) placed at random sizes and positions, so the answer lives in
specific image regions and which visual tokens survive pruning matters.

Each row also carries its scene as JSON (an extra column VLMEvalKit ignores): the items, the
item drawn in each 8x8 patch (``patches``, -1 = background) and which items the question is
about (``focus``). Training uses the per-patch items as dense supervision for the vision tower;
pruning studies use ``focus`` as ground truth for "the tokens that carry the answer".

Same seed, same ``n``: byte-identical files (NumPy's PCG64 streams, PIL drawing without
anti-aliasing, PNG encoding at a fixed compression level).
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# bump whenever the generator's output changes: cached copies are kept per version
VERSION = 2
# the same for the native-resolution variant (2: square 192-pixel images, whose grid is synth8's
# 12 x 12, record their grid and cell size like every other native image)
NATIVE_VERSION = 2


def version(native: bool = False) -> int:
    """The generator version of the fixed-size (synth8) or native-resolution output."""
    return NATIVE_VERSION if native else VERSION

IMAGE_SIZE = 96
PATCH = 8
GRID = IMAGE_SIZE // PATCH  # 12 x 12 = 144 patches
# the native-resolution variant (``native=True``): the same scenes drawn at a random size per
# image, labelled per 16x16 patch (one visual token of a 2x2-merging Qwen2.5-VL with 8-pixel
# patches): 4x4 = 16 to 16x16 = 256 tokens
NATIVE_CELL, NATIVE_MIN, NATIVE_MAX = 16, 64, 256

FAMILIES = ("colour", "shape", "count", "relation", "exist", "chart", "char", "word")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 205),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "cyan": (40, 205, 215),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
RELATIONS = ("left", "right", "above", "below")
# Characters drawn by the OCR families. A-D and Z are left out of the single-character family:
# a lone "B" answer would be read by the exact-matching scorer as option letter B.
GLYPHS = string.digits + string.ascii_uppercase
CHAR_ANSWERS = tuple(c for c in GLYPHS if c not in "ABCDZOI")
WORDS = (
    "CAT", "CAR", "CAP", "CUP", "COT", "DOG", "DOT", "HOT", "HAT", "HUT", "NUT", "NET",
    "PEN", "PIN", "PIG", "BIG", "BAG", "BUG", "BUS", "SUN", "RUN", "RED", "BED", "BOX",
    "FOX", "FIX", "SIX", "MIX", "MAP", "MOP", "TOP", "TIP", "LIP", "LOG", "FOG", "JOG",
    "KEY", "SKY", "WET", "JET",
)  # fmt: skip
TSV_COLUMNS = ("index", "image", "question", "A", "B", "C", "D", "answer", "category", "split", "scene")


@dataclass
class Item:
    """One drawn thing. ``box`` is (x0, y0, x1, y1) in pixels, exclusive on the right."""

    kind: str  # "shape" | "bar" | "char"
    colour: str
    box: tuple[int, int, int, int]
    shape: str | None = None
    char: str | None = None
    value: int | None = None  # bar height in chart units (1..9)


@dataclass
class Question:
    family: str
    question: str
    options: list[str]
    answer: int  # index into options
    items: list[Item]
    focus: list[int]  # indices of the items the question is about
    background: int = 24
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- drawing


@functools.lru_cache(maxsize=None)
def _glyph_mask(char: str, scale: int) -> np.ndarray:
    """Boolean glyph of PIL's built-in bitmap font, cropped to its ink and scaled up."""
    font = ImageFont.load_default_imagefont()
    mask = font.getmask(char)
    ink = np.array(mask, dtype=np.uint8).reshape(mask.size[1], mask.size[0]) > 0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.kron(ink, np.ones((scale, scale), dtype=bool))


def _shape_polygon(shape: str, box: tuple[int, int, int, int]) -> list[tuple[float, float]] | None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0 - 1, y1 - y0 - 1
    cx, cy = x0 + w / 2, y0 + h / 2
    if shape == "triangle":
        return [(cx, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    if shape == "diamond":
        return [(cx, y0), (x0 + w, cy), (cx, y0 + h), (x0, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            r = w / 2 if k % 2 == 0 else w / 5
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + r * np.cos(a), cy + r * h / w * np.sin(a)))
        return pts
    return None


def _draw_item(draw: ImageDraw.ImageDraw, item: Item, fill) -> None:
    x0, y0, x1, y1 = item.box
    if item.kind == "bar" or item.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif item.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif item.shape == "cross":
        t = max(2, (x1 - x0) // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - t // 2, y0, cx - t // 2 + t - 1, y1 - 1), fill=fill)
        draw.rectangle((x0, cy - t // 2, x1 - 1, cy - t // 2 + t - 1), fill=fill)
    elif item.kind == "shape":
        draw.polygon(_shape_polygon(item.shape, item.box), fill=fill)
    else:
        raise ValueError(f"cannot draw item {item}")


def _scaled(item: Item, sx: float, sy: float) -> Item:
    x0, y0, x1, y1 = item.box
    box = (round(x0 * sx), round(y0 * sy), max(round(x1 * sx), round(x0 * sx) + 1), max(round(y1 * sy), round(y0 * sy) + 1))
    return Item(item.kind, item.colour, box, item.shape, item.char, item.value)


def render(q: Question, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE), cell: int = PATCH
           ) -> tuple[Image.Image, np.ndarray]:  # fmt: skip
    """Draw a scene at ``size`` (width, height; the scene's 96x96 layout scaled to it). Returns the
    RGB image and the item index per ``cell`` x ``cell`` patch (-1 = none), (height/cell, width/cell).

    A patch belongs to the item that covers most of its pixels, if that item covers at least
    1/8 of the patch.
    """
    width, height = size
    if width % cell or height % cell:
        raise ValueError(f"image size {size} is not a multiple of the {cell}-pixel patch")
    sx, sy = width / IMAGE_SIZE, height / IMAGE_SIZE
    bg = q.background
    image = Image.new("RGB", size, (bg, bg, bg))
    owner = Image.new("I", size, 0)  # item index + 1 per pixel
    canvas, owner_draw = ImageDraw.Draw(image), ImageDraw.Draw(owner)
    for i, item in enumerate(q.items):
        drawn = _scaled(item, sx, sy) if size != (IMAGE_SIZE, IMAGE_SIZE) else item
        if item.kind == "char":
            scale = (item.box[3] - item.box[1]) // _glyph_mask(item.char, 1).shape[0]
            ink = Image.fromarray(_glyph_mask(item.char, scale).astype(np.uint8) * 255, mode="L")
            x0, y0, x1, y1 = drawn.box
            if ink.size != (x1 - x0, y1 - y0):
                ink = ink.resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST)
            image.paste(COLOURS[item.colour], drawn.box[:2], ink)
            owner.paste(i + 1, drawn.box[:2], ink)
        else:
            _draw_item(canvas, drawn, COLOURS[item.colour])
            _draw_item(owner_draw, drawn, i + 1)
    rows, cols = height // cell, width // cell
    own = np.array(owner).reshape(rows, cell, cols, cell).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    patches = np.full((rows, cols), -1, dtype=np.int64)
    for r in range(rows):
        for c in range(cols):
            counts = np.bincount(own[r, c], minlength=len(q.items) + 1)
            counts[0] = 0
            if counts.max() >= cell * cell // 8:
                patches[r, c] = int(counts.argmax()) - 1
    return image, patches


def redraw(scene: dict, size: tuple[int, int], cell: int = NATIVE_CELL) -> tuple[Image.Image, np.ndarray]:
    """Draw a row's stored scene (its ``scene`` column, parsed) again at ``size``, labelled per
    ``cell`` pixels: the same scene at another scale, exactly as ``render`` draws it."""
    items = [Item(**{**it, "box": tuple(it["box"])}) for it in scene["items"]]
    q = Question("", "", [], 0, items, list(scene["focus"]), background=scene["background"])
    return render(q, size, cell)


def native_size(rng, cell: int = NATIVE_CELL) -> tuple[int, int]:
    """A random image size for the native-resolution variant: width a multiple of ``cell`` in
    [NATIVE_MIN, NATIVE_MAX], an aspect ratio within 2:3 to 3:2, the height rounded to ``cell``."""
    width = int(rng.integers(NATIVE_MIN // cell, NATIVE_MAX // cell + 1)) * cell
    aspect = float(np.exp(rng.uniform(np.log(2 / 3), np.log(3 / 2))))
    height = int(np.clip(round(width * aspect / cell) * cell, NATIVE_MIN, NATIVE_MAX))
    return width, height


# --------------------------------------------------------------------------- placement


def _place(rng: np.random.Generator, sizes: list[tuple[int, int]], margin: int = 3, tries: int = 400):
    """Non-overlapping boxes (with ``margin`` pixels between them) for the given (w, h) sizes."""
    for _ in range(50):
        boxes: list[tuple[int, int, int, int]] = []
        for w, h in ((int(w), int(h)) for w, h in sizes):
            for _ in range(tries):
                x0 = int(rng.integers(1, IMAGE_SIZE - w))
                y0 = int(rng.integers(1, IMAGE_SIZE - h))
                b = (x0, y0, x0 + w, y0 + h)
                if all(
                    b[0] >= o[2] + margin or o[0] >= b[2] + margin or b[1] >= o[3] + margin or o[1] >= b[3] + margin
                    for o in boxes
                ):
                    boxes.append(b)
                    break
            else:
                break
        if len(boxes) == len(sizes):
            return boxes
    raise RuntimeError(f"could not place {len(sizes)} items")


def _shapes(rng, n, *, size=(14, 25), distinct_shapes=False, distinct_colours=False, margin=3):
    sizes = [int(s) for s in rng.integers(size[0], size[1], n)]
    boxes = _place(rng, [(s, s) for s in sizes], margin=margin)
    shapes = rng.choice(SHAPES, n, replace=not distinct_shapes)
    colours = rng.choice(list(COLOURS), n, replace=not distinct_colours)
    return [Item("shape", str(c), b, shape=str(s)) for s, c, b in zip(shapes, colours, boxes)]


def _options(rng, answer: str, pool, prefer=(), k: int = 4) -> tuple[list[str], int]:
    """``k`` shuffled options: the answer, then distractors from ``prefer`` first, then ``pool``."""
    distract = [p for p in dict.fromkeys(prefer) if p != answer]
    rest = [p for p in pool if p != answer and p not in distract]
    rng.shuffle(distract)
    rest = list(rng.permutation(rest)) if rest else []
    opts = [answer] + (distract + [str(r) for r in rest])[: k - 1]
    order = rng.permutation(len(opts))
    opts = [opts[i] for i in order]
    return opts, opts.index(answer)


# --------------------------------------------------------------------------- families


def _colour(rng) -> Question:
    items = _shapes(rng, int(rng.integers(1, 5)), distinct_shapes=True)
    t = int(rng.integers(len(items)))
    opts, ans = _options(rng, items[t].colour, COLOURS, prefer=[it.colour for it in items])
    return Question("colour", f"What colour is the {items[t].shape}?", opts, ans, items, [t])


def _shape(rng) -> Question:
    items = _shapes(rng, int(rng.integers(1, 5)), distinct_colours=True)
    t = int(rng.integers(len(items)))
    opts, ans = _options(rng, items[t].shape, SHAPES, prefer=[it.shape for it in items])
    return Question("shape", f"What shape is the {items[t].colour} object?", opts, ans, items, [t])


def _count(rng) -> Question:
    n = int(rng.integers(1, 7))
    items = _shapes(rng, n, size=(11, 18), margin=4)
    # options: four consecutive numbers around n, the window drawn at random, so the answer's
    # place among them tells nothing (nearest-neighbour distractors would put it in the middle)
    low = int(rng.integers(max(1, n - 3), min(n, 6) + 1))
    opts, ans = _options(rng, str(n), [str(v) for v in range(low, low + 4)])
    return Question("count", "How many objects are there?", opts, ans, items, list(range(n)))


def _relation(rng) -> Question:
    while True:
        items = _shapes(rng, int(rng.integers(2, 5)), distinct_shapes=True, distinct_colours=True)
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = items[0].box, items[1].box
        dx = (ax0 + ax1 - bx0 - bx1) / 2
        dy = (ay0 + ay1 - by0 - by1) / 2
        # unambiguous: separated along one axis, clearly more than along the other
        if abs(dx) >= 2 * abs(dy) and max(ax0, bx0) >= min(ax1, bx1):
            rel = "right" if dx > 0 else "left"
            break
        if abs(dy) >= 2 * abs(dx) and max(ay0, by0) >= min(ay1, by1):
            rel = "below" if dy > 0 else "above"
            break
    a, b = items[0], items[1]
    opts, ans = _options(rng, rel, RELATIONS)
    q = f"Where is the {a.colour} {a.shape} relative to the {b.colour} {b.shape}?"
    return Question("relation", q, opts, ans, items, [0, 1])


def _exist(rng) -> Question:
    items = _shapes(rng, int(rng.integers(1, 5)))
    present = {(it.colour, it.shape) for it in items}
    if rng.random() < 0.5:
        t = int(rng.integers(len(items)))
        colour, shape, focus, answer = items[t].colour, items[t].shape, [t], "yes"
    else:
        # hard negatives: reuse a present colour or a present shape
        ref = items[int(rng.integers(len(items)))]
        while True:
            colour = ref.colour if rng.random() < 0.5 else str(rng.choice(list(COLOURS)))
            shape = ref.shape if colour != ref.colour else str(rng.choice(SHAPES))
            if (colour, shape) not in present:
                break
        focus = [i for i, it in enumerate(items) if it.colour == colour or it.shape == shape]
        answer = "no"
    opts = ["yes", "no"]
    return Question("exist", f"Is there a {colour} {shape} in the image?", opts, opts.index(answer), items, focus)


def _chart(rng) -> Question:
    n = int(rng.integers(3, 6))
    width = int(rng.integers(8, 13))
    gap = int(rng.integers(3, 8))
    left = int(rng.integers(2, IMAGE_SIZE - n * width - (n - 1) * gap - 1))
    base = IMAGE_SIZE - int(rng.integers(4, 10))
    unit = 9
    colours = rng.choice(list(COLOURS), n, replace=False)
    while True:
        values = rng.integers(1, 10, n)
        if np.sum(values == values.max()) == 1:
            break
    items = []
    for i, (c, v) in enumerate(zip(colours, values)):
        x0 = left + i * (width + gap)
        top = max(1, base - int(v) * unit)
        items.append(Item("bar", str(c), (x0, top, x0 + width, base), value=int(v)))
    if rng.random() < 0.5:
        t = int(np.argmax(values))
        opts, ans = _options(rng, items[t].colour, COLOURS, prefer=[it.colour for it in items])
        return Question("chart", "Which bar is the tallest?", opts, ans, items, list(range(n)))
    t = int(rng.integers(n))
    v = items[t].value
    near = [str(u) for u in sorted(range(1, 10), key=lambda u: (abs(u - v), u)) if u != v]
    prefer = [str(it.value) for it in items]
    opts, ans = _options(rng, str(v), near[:6], prefer=prefer)
    return Question("chart", f"What is the value of the {items[t].colour} bar?", opts, ans, items, [t])


def _char_items(rng, chars: str, scale: int, colour: str, others: int) -> list[Item]:
    masks = [_glyph_mask(c, scale) for c in chars]
    gap = scale
    w = sum(m.shape[1] for m in masks) + gap * (len(masks) - 1)
    h = max(m.shape[0] for m in masks)
    sizes = [(w, h)] + [(s, s) for s in rng.integers(12, 20, others)]
    boxes = _place(rng, sizes, margin=4)
    items, x = [], boxes[0][0]
    for c, m in zip(chars, masks):
        y0 = boxes[0][1] + h - m.shape[0]
        items.append(Item("char", colour, (x, y0, x + m.shape[1], y0 + m.shape[0]), char=c))
        x += m.shape[1] + gap
    for b in boxes[1:]:
        items.append(Item("shape", str(rng.choice(list(COLOURS))), b, shape=str(rng.choice(SHAPES))))
    return items


def _char(rng) -> Question:
    char = str(rng.choice(list(CHAR_ANSWERS)))
    items = _char_items(rng, char, int(rng.integers(3, 5)), str(rng.choice(list(COLOURS))), int(rng.integers(0, 3)))
    opts, ans = _options(rng, char, CHAR_ANSWERS)
    return Question("char", "Which character is shown in the image?", opts, ans, items, [0])


def _word(rng) -> Question:
    # options: a random pivot word and the three words closest to it (letters in common), the
    # answer drawn from those four. Reading one letter is not enough, and since the answer is
    # not the pivot in general, "the option most like the others" is no shortcut.
    pivot = str(rng.choice(list(WORDS)))
    near = sorted(WORDS, key=lambda w: (sum(a != b for a, b in zip(w, pivot)), rng.random()))[:4]
    word = near[int(rng.integers(4))]
    items = _char_items(rng, word, 3, str(rng.choice(list(COLOURS))), int(rng.integers(0, 3)))
    opts, ans = _options(rng, word, near)
    return Question("word", "What word is written in the image?", opts, ans, items, list(range(len(word))))


GENERATORS = {
    "colour": _colour,
    "shape": _shape,
    "count": _count,
    "relation": _relation,
    "exist": _exist,
    "chart": _chart,
    "char": _char,
    "word": _word,
}
SPLITS = ("test", "train")


def generate(family: str, seed: int, n: int, split: str = "test", native: bool = False):
    """Yield ``n`` (Question, image, patches) of one family. One independent stream per
    (seed, family, split), so changing ``n`` only appends rows. ``native``: the same questions,
    each drawn at its own size (``native_size``, from a stream of its own) and labelled per
    ``NATIVE_CELL`` pixels."""
    rng = np.random.default_rng([seed, FAMILIES.index(family), SPLITS.index(split)])
    sizes = np.random.default_rng([seed, FAMILIES.index(family), SPLITS.index(split), 1])
    for _ in range(n):
        q = GENERATORS[family](rng)
        q.background = int(rng.integers(12, 52))
        if native:
            image, patches = render(q, native_size(sizes), NATIVE_CELL)
        else:
            image, patches = render(q)
        yield q, image, patches


def encode_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def row(index: int, q: Question, image: Image.Image, patches: np.ndarray, split: str) -> dict[str, str]:
    scene = {
        "items": [{k: v for k, v in asdict(it).items() if v is not None} for it in q.items],
        "focus": q.focus,
        "patches": patches.reshape(-1).tolist(),
        "background": q.background,
    }
    cell = image.size[0] // patches.shape[1]
    if cell != PATCH:  # native resolution: the patch grid and cell size
        scene.update(grid=list(patches.shape), cell=cell)
    out = {"index": str(index), "image": encode_png(image), "question": q.question}
    for letter in "ABCD":
        k = "ABCD".index(letter)
        out[letter] = q.options[k] if k < len(q.options) else ""
    out.update(
        answer="ABCD"[q.answer],
        category=q.family,
        split=split,
        scene=json.dumps(scene, separators=(",", ":")),
    )
    return out


def write_tsv(path: Path, rows) -> int:
    """Write rows atomically (a temp file renamed into place). Returns the row count."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=TSV_COLUMNS, delimiter="\t", lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow(r)
                count += 1
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def synth(out: str | Path, *, seed: int = 0, n: int = 250, n_train: int = 0, families=FAMILIES, native: bool = False,
          progress=None) -> dict:  # fmt: skip
    """Write ``synth8_<family>.tsv`` (test split, ``n`` rows each) and, if ``n_train``,
    ``synth8_train.tsv`` (all families interleaved, ``n_train`` rows per family) into ``out``.
    ``native``: every image at its own size (see ``generate``).

    Returns a manifest (also written as ``manifest.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; valid: {', '.join(FAMILIES)}")
    files = {}
    for fi, family in enumerate(families):
        base = fi * 1_000_000
        rows = (row(base + i, *g, "test") for i, g in enumerate(generate(family, seed, n, "test", native)))
        rows = progress(rows, total=n, desc=f"synth8 {family}") if progress else rows
        files[f"synth8_{family}.tsv"] = write_tsv(out / f"synth8_{family}.tsv", rows)
    if n_train:
        streams = [generate(f, seed, n_train, "train", native) for f in families]

        def interleaved():
            for i in range(n_train):
                for fi, s in enumerate(streams):
                    yield row(50_000_000 + i * len(families) + fi, *next(s), "train")

        rows = progress(interleaved(), total=n_train * len(families), desc="synth8 train") if progress else interleaved()
        files["synth8_train.tsv"] = write_tsv(out / "synth8_train.tsv", rows)
    manifest = {"benchmark": "synth8-native" if native else "synth8", "version": version(native), "seed": seed, "n": n, "n_train": n_train, "families": list(families), "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
