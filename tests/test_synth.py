import json

import numpy as np
import pytest

from paretobench.data import synth
from paretobench.data.tsv import read_tsv


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path):
    synth.synth(tmp_path / "a", seed=7, n=4, n_train=3)
    synth.synth(tmp_path / "b", seed=7, n=4, n_train=3)
    a, b = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert set(a) == {f"synth8_{f}.tsv" for f in synth.FAMILIES} | {"synth8_train.tsv", "manifest.json"}
    assert a == b


def test_another_seed_gives_other_images(tmp_path):
    synth.synth(tmp_path / "a", seed=1, n=5)
    synth.synth(tmp_path / "b", seed=2, n=5)
    for f in synth.FAMILIES:
        ia = {s.image_b64 for s in read_tsv(tmp_path / "a" / f"synth8_{f}.tsv")}
        ib = {s.image_b64 for s in read_tsv(tmp_path / "b" / f"synth8_{f}.tsv")}
        assert not ia & ib, f


def test_more_rows_only_append(tmp_path):
    synth.synth(tmp_path / "a", seed=0, n=3)
    synth.synth(tmp_path / "b", seed=0, n=6)
    short = read_tsv(tmp_path / "a" / "synth8_count.tsv")
    long = read_tsv(tmp_path / "b" / "synth8_count.tsv")
    assert [s.image_b64 for s in short] == [s.image_b64 for s in long[:3]]


@pytest.mark.parametrize("family", synth.FAMILIES)
def test_rows_are_valid_questions(synth_dir, family):
    samples = read_tsv(synth_dir / f"synth8_{family}.tsv")
    assert len(samples) == 6
    for s in samples:
        assert s.category == family and s.split == "test"
        assert s.answer in s.options and len(set(s.options.values())) == len(s.options)
        assert len(s.options) == (2 if family == "exist" else 4)
        assert s.image().size == (synth.IMAGE_SIZE, synth.IMAGE_SIZE)
        scene = json.loads(s.extra["scene"])
        assert len(scene["patches"]) == synth.GRID**2


def test_scene_patches_match_the_drawn_pixels(synth_dir):
    """A patch owned by an item is coloured with that item's colour; background patches are flat."""
    for s in read_tsv(synth_dir / "synth8_colour.tsv"):
        img = np.asarray(s.image())
        scene = json.loads(s.extra["scene"])
        for p, owner in enumerate(scene["patches"]):
            r, c = divmod(p, synth.GRID)
            block = img[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].reshape(-1, 3)
            if owner < 0:
                continue
            colour = synth.COLOURS[scene["items"][owner]["colour"]]
            assert (block == colour).all(1).sum() >= 8


def test_focus_items_are_what_the_question_names(synth_dir):
    for s in read_tsv(synth_dir / "synth8_colour.tsv") + read_tsv(synth_dir / "synth8_shape.tsv"):
        scene = json.loads(s.extra["scene"])
        (item,) = [scene["items"][i] for i in scene["focus"]]
        named = item["shape"] if s.category == "colour" else item["colour"]
        answer = item["colour"] if s.category == "colour" else item["shape"]
        assert named in s.question and s.options[s.answer] == answer


def test_train_split_interleaves_all_families(synth_dir):
    rows = read_tsv(synth_dir / "synth8_train.tsv")
    assert len(rows) == 12 * len(synth.FAMILIES)
    assert {s.split for s in rows} == {"train"}
    assert [s.category for s in rows[: len(synth.FAMILIES)]] == list(synth.FAMILIES)


def _distance(a: str, b: str) -> float:
    if a.isdigit() and b.isdigit():
        return abs(int(a) - int(b))
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


@pytest.mark.parametrize("family", synth.FAMILIES)
def test_options_alone_do_not_give_the_answer_away(family):
    """Without the image, a question must stay near chance: the answer is not the option most
    like the others (e.g. the middle of four consecutive counts) and not at a favoured letter."""
    questions = [q for q, _, _ in synth.generate(family, seed=11, n=400)]
    chance = 1 / len(questions[0].options)

    def central(q):
        return min(range(len(q.options)), key=lambda i: sum(_distance(q.options[i], o) for o in q.options))

    central_acc = np.mean([central(q) == q.answer for q in questions])
    letters = np.bincount([q.answer for q in questions], minlength=len(questions[0].options)) / len(questions)
    assert central_acc <= chance + 0.12, f"{family}: the most central option is right {central_acc:.0%} of the time"
    assert letters.max() <= chance + 0.08, f"{family}: answer letters {letters}"


def test_generator_output_is_pinned_to_its_version():
    """Cached benchmarks are kept per ``synth.VERSION``. If this fails after a deliberate change
    to the generator, bump ``VERSION`` and put the new digest here."""
    import hashlib

    h = hashlib.sha256()
    for family in synth.FAMILIES:
        for q, image, patches in synth.generate(family, seed=0, n=3):
            h.update(repr((q.question, q.options, q.answer)).encode())
            h.update(image.tobytes())
            h.update(patches.tobytes())
    assert (synth.VERSION, h.hexdigest()) == (2, "8eee83de98a637dc8c74179ddc3ef70e8209a6d02b1d67d674559549a0cdb26b")


def test_native_resolution_draws_the_same_scenes_at_their_own_sizes():
    sizes = set()
    for family in synth.FAMILIES:
        fixed = list(synth.generate(family, seed=0, n=4))
        native = list(synth.generate(family, seed=0, n=4, native=True))
        for (q, image, patches), (qn, img_n, patches_n) in zip(fixed, native):
            assert (q.question, q.options, q.answer) == (qn.question, qn.options, qn.answer)
            w, h = img_n.size
            cell = synth.NATIVE_CELL
            assert synth.NATIVE_MIN <= min(w, h) and max(w, h) <= synth.NATIVE_MAX and w % cell == h % cell == 0
            assert 2 / 3 - 0.1 <= h / w <= 3 / 2 + 0.1
            assert patches_n.shape == (h // cell, w // cell)
            # every item the 96-pixel image shows, the native one shows too (where it is drawn)
            assert set(patches_n[patches_n >= 0].tolist()) <= set(range(len(q.items)))
            sizes.add((w, h))
            # a patch owned by a shape item carries that item's colour
            arr = np.asarray(img_n)
            for (r, c) in zip(*np.nonzero(patches_n >= 0)):
                item = qn.items[patches_n[r, c]]
                block = arr[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell].reshape(-1, 3)
                assert (block == synth.COLOURS[item.colour]).all(1).sum() >= cell * cell // 8
    assert len(sizes) > 10  # sizes vary


def test_native_rows_record_their_patch_grid(tmp_path):
    synth.synth(tmp_path, seed=2, n=2, families=("colour",), native=True)
    for s in read_tsv(tmp_path / "synth8_colour.tsv"):
        scene = json.loads(s.extra["scene"])
        w, h = s.image().size
        assert scene["cell"] == synth.NATIVE_CELL and scene["grid"] == [h // 16, w // 16]
        assert len(scene["patches"]) == (h // 16) * (w // 16)
    assert json.loads((tmp_path / "manifest.json").read_text())["benchmark"] == "synth8-native"


def test_a_native_image_with_synth8s_grid_still_records_its_cell():
    # 192 x 192 pixels in 16-pixel cells is a 12 x 12 grid, the same as synth8's 96-pixel images
    q = synth.GENERATORS["colour"](np.random.default_rng(0))
    q.background = 20
    image, patches = synth.render(q, (192, 192), synth.NATIVE_CELL)
    scene = json.loads(synth.row(0, q, image, patches, "test")["scene"])
    assert scene["grid"] == [12, 12] and scene["cell"] == synth.NATIVE_CELL
    fixed = json.loads(synth.row(0, q, *synth.render(q), "test")["scene"])
    assert "cell" not in fixed and "grid" not in fixed  # synth8's rows are unchanged


def test_a_stored_scene_redraws_its_row_exactly(tmp_path):
    """``redraw`` at a row's own size gives back its image and patch labels to the pixel (every
    family, fixed and native); at another size it draws the same items, scaled."""
    synth.synth(tmp_path / "native", seed=3, n=2, native=True)
    synth.synth(tmp_path / "fixed", seed=3, n=2)
    for folder, cell in (("native", synth.NATIVE_CELL), ("fixed", synth.PATCH)):
        for family in synth.FAMILIES:
            for s in read_tsv(tmp_path / folder / f"synth8_{family}.tsv"):
                scene = json.loads(s.extra["scene"])
                image, patches = synth.redraw(scene, s.image().size, cell)
                assert np.array_equal(np.asarray(image), np.asarray(s.image().convert("RGB"))), (folder, family)
                assert patches.reshape(-1).tolist() == scene["patches"]
                small, owners = synth.redraw(scene, (96, 96), synth.NATIVE_CELL)
                assert small.size == (96, 96) and owners.shape == (6, 6)
                assert set(owners[owners >= 0].tolist()) <= set(range(len(scene["items"])))
