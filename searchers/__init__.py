"""Search methods (one module each, behind a common ask/tell ``Searcher`` interface); registered in
``paretobench.registry.SEARCHERS``."""
