"""Pruning methods (one module each, behind a common ``Pruner`` interface); registered in
``paretobench.registry.PRUNERS``."""
