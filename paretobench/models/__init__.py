"""Loading VLMs from local folders (``loading``), the embedded models' builders (``tiny_llava``,
``tiny_qwen``, ``tiny_gemma3``; their trained weights ship in ``embedded/``), and random decoders
of real checkpoints' shapes for timing (``checkpoint_shapes``). The embedded models register
here by name; their modules load only when one is asked for."""

from paretobench.registry import MODELS

MODELS.register("tiny-llava", "paretobench.models.tiny_llava:embedded_dir",
                doc="embedded LLaVA (CLIP tower + 8-layer Llama, 144 visual tokens), trained on synth8")
MODELS.register("tiny-qwen2.5-vl", "paretobench.models.tiny_qwen:embedded_dir",
                doc="embedded Qwen2.5-VL (windowed ViT + 2x2 merger, 8-layer Qwen2 decoder, 16-256 visual tokens by "
                    "image size), trained on synth8-native")  # fmt: skip
MODELS.register("tiny-gemma3", "paretobench.models.tiny_gemma3:embedded_dir",
                doc="embedded Gemma 3 (SigLIP tower + pooling projector, 8-layer Gemma 3 decoder with sliding-window "
                    "layers and bidirectional image blocks, 144 visual tokens), trained on synth8")  # fmt: skip
