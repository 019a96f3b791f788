import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Generated datasets (e.g. synth8 on first use) go to a per-run folder, not the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PARETOBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synth8 folder: 6 test questions per family and 12 training questions per family."""
    from paretobench.data import synth

    out = tmp_path_factory.mktemp("synth8")
    synth.synth(out, seed=3, n=6, n_train=12)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised, deliberately small tiny-llava saved with its processor."""
    from paretobench.models.tiny_llava import build_model, build_processor

    out = tmp_path_factory.mktemp("tiny")
    processor = build_processor()
    model = build_model(processor, seed=1, text_layers=2, text_hidden=32, vision_layers=1)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
