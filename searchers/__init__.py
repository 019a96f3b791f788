"""Search methods, one private module each, behind the ask/tell ``Searcher`` interface
(``searchers.base``); registered by name in ``paretobench.registry.SEARCHERS``. Importing this
package imports no optimisation library: each searcher imports its own when constructed."""

from searchers._grid import Grid
from searchers._gsearch import GSearch
from searchers._nsga2 import NSGA2
from searchers._preset import Preset
from searchers._pymoo import Pymoo
from searchers._random import Random
from searchers.base import Searcher, monotone
from searchers.vispco import VisPCO

__all__ = ["Grid", "GSearch", "NSGA2", "Preset", "Pymoo", "Random", "Searcher", "VisPCO", "monotone"]
