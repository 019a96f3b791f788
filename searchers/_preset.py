"""``preset``: the fixed schedules a user would try first: the pruner's published default (when
it has one), the paper's Table 2 baselines ``vtw-K`` for every K and ``aim``. No search."""

from __future__ import annotations

from paretobench import presets
from paretobench.schedule import ScheduleError
from searchers.base import Searcher


class Preset(Searcher):
    name = "preset"

    def ask(self):
        if self.asked:
            return []
        layers, out = self.space.layers, []
        if self.space.pruner:
            try:
                out.append(presets.resolve(f"{self.space.pruner}-default", layers))
            except ScheduleError:  # a method without a published schedule (or a fitted one)
                pass
        out += [presets.vtw(layers, k) for k in range(1, layers)] + [presets.aim(layers)]
        self.n = len(out)
        return self._take(out)
