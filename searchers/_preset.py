"""``preset``: the fixed schedules a user would try first: the pruner's published default (when
it has one), the paper's Table 2 baselines ``vtw-K`` for every K and ``aim``. No search."""

from __future__ import annotations

from paretobench import presets
from paretobench.registry import SEARCHERS
from paretobench.schedule import ScheduleError
from searchers.base import Searcher

GROUPS = ("default", "vtw", "aim")


@SEARCHERS.register("preset", doc="the pruner's default, vtw-K for every K, aim")
class Preset(Searcher):
    """``names``: which of them (``--param names=vtw`` alone gives the paper's VTW row)."""

    name = "preset"

    def __init__(self, space, *, names=GROUPS, **kw):
        super().__init__(space, **kw)
        names = (names,) if isinstance(names, str) else tuple(names)
        unknown = [g for g in names if g not in GROUPS]
        if unknown or not names:
            raise ValueError(f"preset: unknown names {unknown or names}; valid: {', '.join(GROUPS)}")
        self.names = names

    def params(self):
        return {"names": list(self.names)}

    def ask(self):
        if self.asked:
            return []
        layers, out = self.space.layers, []
        if self.space.pruner and "default" in self.names:
            try:
                out.append(presets.resolve(f"{self.space.pruner}-default", layers))
            except ScheduleError:  # a method without a published schedule (or a fitted one)
                pass
        if "vtw" in self.names:
            out += [presets.vtw(layers, k) for k in range(1, layers)]
        if "aim" in self.names:
            out.append(presets.aim(layers))
        self.n = len(out)
        return self._take(out)
