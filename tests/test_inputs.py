"""Inputs with no questions: a one-line error naming what is empty, a non-zero exit, and the
results folder left as it was (``paretobench eval`` and ``paretobench run``)."""

import shutil

import pytest

from paretobench.cli import main
from paretobench.run_loop import RunConfig, run


def _header_only(path):
    path.write_text("index\timage\tquestion\tA\tB\tanswer\tcategory\n")
    return path


CASES = {  # name -> (build the --data argument in a folder, what the error says)
    "header-only tsv": (lambda d: _header_only(d / "MMBench_DEV_EN.tsv"), "MMBench_DEV_EN.tsv: no questions"),
    "header and blank lines": (lambda d: (_header_only(d / "x.tsv"), open(d / "x.tsv", "a").write("\n\n"))[0],
                               "x.tsv: no questions"),
    "empty file": (lambda d: (d / "e.tsv").write_bytes(b"") or d / "e.tsv", "e.tsv: empty file"),
    "empty folder": (lambda d: d, "no .tsv benchmark files"),
    "only a training split": (lambda d: _header_only(d / "synth8_train.tsv").parent,
                              "no .tsv benchmark files (synth8_train.tsv: training splits, not benchmarks)"),
}


@pytest.fixture(scope="module")
def results(tiny_model_dir, synth_dir, tmp_path_factory):
    """A results folder holding one finished run."""
    out = tmp_path_factory.mktemp("results")
    run(RunConfig(searcher="random", model=str(tiny_model_dir), data=(str(synth_dir),), limit=1, n=2, budgets=(0.5,),
                  out=str(out), batch_size=8), progress=False)  # fmt: skip
    return out


def _untouched(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["run", "eval"])
def test_data_without_questions_is_a_one_line_error(case, command, results, tiny_model_dir, tmp_path, capsys):
    make, says = CASES[case]
    folder = tmp_path / "data"
    folder.mkdir()
    data = make(folder)
    before = _untouched(results)
    args = ["--model", str(tiny_model_dir), "--data", str(data), "--json"]
    if command == "run":
        args = ["run", "--searcher", "random", "--n", "2", "--out", str(results), *args]
    else:
        args = ["eval", *args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert _untouched(results) == before


def test_one_empty_file_among_several_datasets_is_named(results, tiny_model_dir, synth_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    _header_only(data / "synth8_word.tsv")
    before = _untouched(results)
    assert main(["run", "--searcher", "random", "--n", "2", "--model", str(tiny_model_dir), "--data", str(synth_dir),
                 str(data / "synth8_word.tsv"), "--out", str(results), "--json"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "synth8_word.tsv: no questions" in err and err.count("\n") == 1
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--json"]) == 2  # a folder with one
    assert "synth8_word.tsv: no questions" in capsys.readouterr().err
    assert _untouched(results) == before


@pytest.mark.parametrize("limit", ["0", "-3"])
@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_limit_that_keeps_no_question_is_a_one_line_error(limit, command, results, tiny_model_dir, synth_dir,
                                                             capsys):  # fmt: skip
    before = _untouched(results)
    args = ["--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", limit, "--json"]
    args = ["run", "--searcher", "random", "--out", str(results), *args] if command == "run" else ["eval", *args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--limit must be >= 1" in err and err.count("\n") == 1
    assert _untouched(results) == before


def test_the_library_refuses_a_limit_keeping_no_question(synth_dir):
    from paretobench.data.datasets import load_dataset
    from paretobench.data.tsv import DatasetError

    with pytest.raises(DatasetError, match="limit 0 keeps no questions"):
        load_dataset(str(synth_dir), limit=0)
