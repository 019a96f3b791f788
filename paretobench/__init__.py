"""paretobench: find and benchmark Pareto-optimal visual-token pruning configurations for VLMs.

Importing this package is cheap: torch, transformers and the model code load only when a
command or function that needs them runs.
"""

__version__ = "0.1.0"
