"""Benchmarks: the VLMEvalKit TSV reader (``tsv``), named datasets (``datasets``), VLMEvalKit's
prompt (``prompt``) and the synthetic synth8 generator (``synth``). The generated benchmarks
register here by name; nothing is generated until one is asked for."""

from paretobench.registry import DATASETS

DATASETS.register("synth8", "paretobench.data.datasets:synth8",
                  doc="synthetic 8-family VQA benchmark (test split, 250 per family, seed 0), generated on first "
                      "use")  # fmt: skip
DATASETS.register("synth8-train", "paretobench.data.datasets:synth8_train",
                  doc="synth8's train split (128 per family, seed 0; questions apart from the test split), for VisPCO")
DATASETS.register("synth8-native", "paretobench.data.datasets:synth8_native",
                  doc="synth8's questions with every image at its own size, 64-256 pixels a side (for native-resolution "
                      "models)")  # fmt: skip
DATASETS.register("synth8-native-train", "paretobench.data.datasets:synth8_native_train",
                  doc="synth8-native's train split (128 per family, seed 0), for VisPCO")
