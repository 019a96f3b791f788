"""Training the embedded models from random initialisation (``paretobench train-embedded``).

Two stages (see ``docs/models.md`` and ``../shared/notes/embedded-model-trials.md`` for why
end-to-end training from scratch fails at this scale: the image tokens collapse onto one mean):

1. **The vision tower alone, dense per-token supervision** (``stages.train_vision``): linear
   heads on the features that feed the decoder's projector predict, for every visual token,
   what the generator drew there (``labels``): item kind, colour, shape, character, bar value,
   and the token's row and column.
2. **Frozen tower; projector (or merger) + decoder** (``stages.train_language``) on the
   VLMEvalKit MCQ prompt with the answer given as the option's text, loss on the answer only;
   optional probes (patch labels, roles, grounding, pointing) shape what the image tokens carry.

``inputs.ImageData`` holds what differs between architectures (LLaVA, Qwen2.5-VL at native
resolution, Gemma 3); ``checkpoint`` makes a long run resumable; ``weights`` starts a run from
another's tower, decoder or whole model; ``card`` writes the model card. Deterministic given
the seed on a fixed thread count.
"""

from paretobench.training.config import TrainingConfig

__all__ = ["ARCHS", "TrainingConfig", "resume", "train_embedded"]


def __getattr__(name: str):
    """The training driver's names, imported on first use: the command line reads
    ``TrainingConfig`` without torch."""
    if name in ("ARCHS", "resume", "train_embedded"):
        from paretobench.training import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
