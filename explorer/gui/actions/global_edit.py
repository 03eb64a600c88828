"""The global panel's edits: one sparsity for all rows (or the selected ones), local or global scope.

A local (uniform) edit is quick and runs at once. A global edit reads the scores of every layer it covers and finds
one threshold over all of them (``prune.scope.global_sparsities``): on a big model that takes seconds (VGG-16,
element granularity: the first threshold sorts 138 M scores). So unless the layers are small and their rankings
built, it runs as a worker job on a ``Snapshot`` -- the job bar says so while it runs -- and its result is applied
through ``session.set_global(..., per_layer=...)``. A newer edit makes a pending result stale: it is discarded
(a newer edit of the panel also makes a queued job skip its work; any other plan edit meanwhile -- a slider, undo --
is said in the status bar). If the kept weights, the seed or the calibration changed while it ran,
the threshold is computed again on the new ones.
"""
from __future__ import annotations

from explorer.core.jobs import Progress
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.prune.scope import global_sparsities

from ..window.context import AppContext

SYNC_GLOBAL_LIMIT = 2_000_000   # a global threshold over at most this many weights (rankings built) is instant


class GlobalEdit:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.session = ctx.session
        self.generation = 0     # bumps on every edit; a global job's result is applied only while it is the latest
        self.running = 0        # global jobs queued or running (tests wait for 0)

    def request(self, mode: str, sparsity: float, granularity: str, criterion: str, scope: str, cap: float) -> None:
        """The panel's Apply-to-rows: ``mode`` 'selected' or 'all', ``scope`` 'local' or 'global'."""
        s = self.session
        self.generation += 1
        names = self.ctx.selected_layers() if mode == "selected" else list(s.layer_names)
        if not names:
            self.ctx.status("select some rows in the layer table first", 4000)
            return
        if scope == "global":
            self.set_global(names, sparsity, granularity, criterion, cap)
            return
        try:
            self._skipped(s.set_uniform(names, sparsity, granularity, criterion))
        except Exception as e:
            self.ctx.report_error(e)

    def set_global(self, names: list[str], sparsity: float, granularity: str, criterion: str, cap: float) -> None:
        s = self.session
        try:
            ok, skipped = s.editor.global_layers(names, sparsity, granularity, criterion)
        except Exception as e:
            self.ctx.report_error(e)
            return
        lp = LayerPlan(0.5, granularity, criterion)
        quick = (sum(s.layer(n).params for n in ok) <= SYNC_GLOBAL_LIMIT
                 and not any(s.calibration.needs(lp) and s.needs_build(n, lp) for n in ok))
        if quick:
            try:
                self._skipped(s.set_global(names, sparsity, granularity, criterion, cap))
            except Exception as e:
                self.ctx.report_error(e)
            return
        gen, snap, loaded, plan = self.generation, s.snapshot(), s.result, s.plan

        def work(progress, cancel):
            if gen != self.generation:
                return None            # a newer edit came first: nothing to compute
            snap.masks.build(ok, Plan({n: lp for n in ok}), progress, cancel)
            progress(Progress(None, "finding one threshold over all layers"))
            per_layer = global_sparsities(snap, ok, sparsity, granularity, criterion, cap)
            cancel.check()
            return per_layer

        def done(per_layer) -> None:
            self.running -= 1
            if per_layer is None or gen != self.generation or s.result is not loaded:
                return                 # stale: a newer edit of the panel, or another model
            if s.plan is not plan:     # the plan was edited meanwhile (a slider, undo): the newer edit wins
                self.ctx.status("global edit dropped: the plan changed while its threshold was computed", 6000)
                return
            if s.masks is not snap.masks:      # new kept weights, seed or calibration meanwhile: again, on them
                self.set_global(names, sparsity, granularity, criterion, cap)
                return
            try:
                self._skipped(s.set_global(names, sparsity, granularity, criterion, cap, per_layer=per_layer))
            except Exception as e:
                self.ctx.report_error(e)

        def ended(e=None) -> None:
            self.running -= 1
            if e is not None:
                self.ctx.report_error(e)

        self.running += 1
        self.ctx.runner.run(f"Global threshold over {len(ok)} layers", work, on_done=done, on_cancel=ended,
                            on_error=ended)

    def _skipped(self, skipped: dict[str, str]) -> None:
        if skipped:
            self.ctx.status(f"{len(skipped)} layer(s) left dense: " + "; ".join(list(skipped.values())[:2]), 10000)
