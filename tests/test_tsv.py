import base64
import io
import subprocess
import sys

import pytest
from PIL import Image

from paretobench.data.datasets import load_dataset
from paretobench.data.prompt import build_prompt
from paretobench.data.tsv import DatasetError, read_tsv


def _png(colour) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


HEADER = "index\timage\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\tl2-category\tsplit"


def _write(path, rows, header=HEADER):
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


@pytest.fixture
def vlmeval_tsv(tmp_path):
    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    return _write(
        tmp_path / "MMBench_MINI.tsv",
        [
            f"10\t{red}\tWhat colour?\tLook closely.\tred\tblue\tnan\tnan\tA\tattr\tperception\tdev",
            "11\t10\tIs it red?\t\tyes\tno\t\t\tA\tattr\tperception\tdev",  # image shared with row 10
            f"12\t{blue}\tName the colour.\tnan\tnan\tnan\tnan\tnan\tblue|navy\tvqa\tocr\tdev",  # VQA
        ],
    )


def test_reads_vlmeval_rows(vlmeval_tsv):
    a, b, c = read_tsv(vlmeval_tsv)
    assert a.options == {"A": "red", "B": "blue"}  # NaN options dropped
    assert a.hint == "Look closely." and b.hint is None
    assert b.image_b64 == a.image_b64  # de-duplicated image resolved
    assert b.image().getpixel((0, 0)) == (255, 0, 0)
    assert not c.is_mcq and c.references == ["blue", "navy"]
    assert a.extra == {"l2-category": "perception"}


def test_prompt_is_built_as_vlmevalkit_builds_it(vlmeval_tsv):
    a = read_tsv(vlmeval_tsv)[0]
    assert a.prompt() == (
        "Hint: Look closely.\nQuestion: What colour?\nOptions:\nA. red\nB. blue\n"
        "Please select the correct answer from the options above. \n"
    )
    assert build_prompt("How many?", {}) == "Question: How many?\n"


def test_limit_keeps_references_resolvable(tmp_path):
    red = _png((255, 0, 0))
    path = _write(tmp_path / "x.tsv", ["1\t2\tq\t\ta\tb\t\t\tA\tc\t\tdev", f"2\t{red}\tq\t\ta\tb\t\t\tB\tc\t\tdev"])
    (only,) = read_tsv(path, limit=1)
    assert only.image_b64 == red


@pytest.mark.parametrize(
    "row, message",
    [
        ("1\tAAAA\tq\t\ta\tb", "row 2: expected 12 tab-separated fields, got 6"),
        ("1\t99\tq\t\ta\tb\t\t\tA\tc\t\tdev", "row 2: image '99' is neither base64 data nor a known index"),
        ("1\t" + "!" * 100 + "\tq\t\ta\tb\t\t\tA\tc\t\tdev", "row 2: image column is not valid base64"),
        ("1\t{img}\tq\t\ta\tb\t\t\tC\tc\t\tdev", "row 2: answer 'C' is not one of the options"),
        ("1\t{img}\tq\t\ta\tb\t\t\t\tc\t\tdev", "row 2: no answer"),
    ],
)
def test_malformed_rows_name_file_and_row(tmp_path, row, message):
    path = _write(tmp_path / "bad.tsv", [row.format(img=_png((1, 2, 3)))])
    with pytest.raises(DatasetError) as e:
        read_tsv(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_duplicate_index_and_missing_columns(tmp_path):
    img = _png((0, 0, 0))
    dup = _write(tmp_path / "dup.tsv", [f"1\t{img}\tq\t\ta\tb\t\t\tA\tc\t\tdev"] * 2)
    with pytest.raises(DatasetError, match="row 3: duplicate index '1'"):
        read_tsv(dup)
    nocol = _write(tmp_path / "nocol.tsv", [f"1\t{img}\tq"], header="index\timage\tquestion")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['answer'\]"):
        read_tsv(nocol)
    with pytest.raises(DatasetError, match="no such file"):
        read_tsv(tmp_path / "absent.tsv")


def test_vlmevalkit_names_resolve_through_lmudata(vlmeval_tsv, tmp_path, monkeypatch):
    monkeypatch.setenv("LMUData", str(vlmeval_tsv.parent))
    d = load_dataset("MMBench_MINI")
    assert d.name == "MMBench_MINI" and d.files == [vlmeval_tsv] and len(d.samples) == 3
    with pytest.raises(DatasetError, match=r"unknown dataset 'MMBench_DEV_EN'.*VLMEvalKit file .*MMBench_DEV_EN\.tsv"):
        load_dataset("MMBench_DEV_EN")
    # an unset or missing $LMUData falls back to ~/LMUData, as VLMEvalKit's LMUDataRoot does
    monkeypatch.setenv("LMUData", str(tmp_path / "absent"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="LMUData/MMBench_MINI.tsv"):
        load_dataset("MMBench_MINI")


def test_folder_dataset_skips_train_split_and_fingerprints(synth_dir):
    d = load_dataset(str(synth_dir), limit=2)
    assert len(d.samples) == 16 and {s.split for s in d.samples} == {"test"}
    assert d.fingerprint == load_dataset(str(synth_dir), limit=1).fingerprint  # a property of the files
    assert len(d.fingerprint) == 64


def test_eval_on_a_malformed_file_fails_clearly_and_writes_nothing(tmp_path):
    path = _write(tmp_path / "bad.tsv", ["1\tAAAA\tq"])
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "paretobench.cli", "eval", "--data", str(path), "--json"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{path}: row 2: expected 12 tab-separated fields, got 3" in proc.stderr
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before
