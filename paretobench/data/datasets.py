"""Resolve ``--data`` to samples: a registered name, a TSV file, or a folder of TSVs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from paretobench.data.tsv import DatasetError, Sample, file_fingerprint, read_tsv


@dataclass
class Dataset:
    name: str
    samples: list[Sample]
    files: list[Path]
    fingerprint: str  # sha256 of the files' bytes

    @property
    def categories(self) -> list[str]:
        return sorted({s.category for s in self.samples})


def cache_dir() -> Path:
    return Path(os.environ.get("PARETOBENCH_CACHE", Path.home() / ".cache" / "paretobench"))


def _cached(name: str, **kw) -> Path:
    """A synth8 folder generated once into the cache (deterministic), named by its settings."""
    from paretobench.data import synth

    folder = cache_dir() / "synth8" / f"v{synth.version(kw.get('native', False))}-{name}"
    if not (folder / "manifest.json").is_file():
        synth.synth(folder, **kw)
    return folder


def synth8(seed: int = 0, n: int = 250) -> Path:
    """The default synth8 test split."""
    return _cached(f"seed{seed}-n{n}", seed=seed, n=n)


def synth8_train(seed: int = 0, n_train: int = 128) -> Path:
    """synth8's train split (``n_train`` questions per family, interleaved); its questions come
    from their own stream, apart from the test split's."""
    return _cached(f"seed{seed}-train{n_train}", seed=seed, n=1, n_train=n_train) / "synth8_train.tsv"


def synth8_native(seed: int = 0, n: int = 250) -> Path:
    """synth8's test split at native resolution: the same questions, each image at its own size."""
    return _cached(f"native-seed{seed}-n{n}", seed=seed, n=n, native=True)


def synth8_native_train(seed: int = 0, n_train: int = 128) -> Path:
    """synth8's train split at native resolution."""
    return _cached(f"native-seed{seed}-train{n_train}", seed=seed, n=1, n_train=n_train, native=True) / "synth8_train.tsv"


def tsv_files(folder: Path) -> list[Path]:
    """Benchmark files of a folder: every ``*.tsv`` except training splits (``*_train.tsv``)."""
    files = sorted(p for p in folder.glob("*.tsv") if not p.stem.endswith("_train"))
    if not files:
        train = sorted(p.name for p in folder.glob("*_train.tsv"))
        skipped = f" ({', '.join(train)}: training splits, not benchmarks)" if train else ""
        raise DatasetError(f"{folder}: no .tsv benchmark files{skipped}")
    return files


def lmudata_root() -> Path:
    """VLMEvalKit's data folder: ``$LMUData`` when it names an existing folder, else ``~/LMUData``
    (the rule of VLMEvalKit's ``LMUDataRoot``, read without importing it)."""
    env = os.environ.get("LMUData")
    return Path(env) if env and Path(env).is_dir() else Path.home() / "LMUData"


def load_dataset(spec: str, *, limit: int | None = None) -> Dataset:
    """``spec`` is a registered dataset name, a ``.tsv`` file or a folder of them, or a benchmark
    named as VLMEvalKit names it (``MMBench_DEV_EN``), read from ``lmudata_root()/<name>.tsv``.

    ``limit`` keeps the first ``limit`` questions of each file (each family, for synth8).
    """
    from paretobench.registry import DATASETS

    path = Path(spec)
    vlmeval_file = lmudata_root() / f"{spec}.tsv"
    if spec in DATASETS:
        path, name = Path(DATASETS.get(spec)()), spec
    elif not path.exists() and os.sep not in spec and vlmeval_file.is_file():
        path, name = vlmeval_file, spec
    elif path.exists():
        name = path.stem if path.is_file() else path.name
    elif spec.endswith(".tsv") or os.sep in spec:
        raise DatasetError(f"{spec}: no such file or folder")
    else:
        try:
            DATASETS.get(spec)  # raises with did-you-mean
        except KeyError as e:
            raise DatasetError(f"{e}; nor is there a VLMEvalKit file {vlmeval_file}") from None
    files = [path] if path.is_file() else tsv_files(path)
    samples = [s for f in files for s in read_tsv(f, limit=limit)]
    return Dataset(name=name, samples=samples, files=files, fingerprint=file_fingerprint(files))
