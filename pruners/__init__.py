"""Pruning methods, one module each behind the ``Pruner`` interface (``pruners.base``). Each
class registers itself in ``paretobench.registry.PRUNERS`` where it is defined; importing this
package imports them all (they load torch only when they run)."""

from pruners import baselines, fastv, fitprune, pyramiddrop, sparsevlm, vitcop  # noqa: F401  (each registers its pruners)
