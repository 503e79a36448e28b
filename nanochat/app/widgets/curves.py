"""Four live curves of one stage (train loss, val bpb, tok/s, MFU), drawn with plotext.

Redrawing a plot is the costly part of a refresh, so a plot is redrawn only when its series grew,
and at most once per MIN_REDRAW_SECONDS.
"""
import time

from textual.app import ComposeResult
from textual.containers import Grid
from textual_plotext import PlotextPlot

from nanochat.i18n import t

MIN_REDRAW_SECONDS = 1.0
MAX_POINTS = 240  # a curve is at most ~120 cells wide, two braille dots a cell: thin longer series


def thin(steps, values, max_points: int = MAX_POINTS) -> tuple[list, list]:
    """Every n-th point (and always the last) so a series has at most about max_points points.
    Called in the worker thread, so the UI thread only ever handles short lists."""
    every = max(len(steps) // max_points, 1)
    xs, ys = list(steps[::every]), list(values[::every])
    if steps and xs[-1] != steps[-1]:
        xs.append(steps[-1])
        ys.append(values[-1])
    return xs, ys


class Curve(PlotextPlot):
    def __init__(self, figure: str, **kw):
        super().__init__(id=f"curve-{figure}", **kw)
        self.figure = figure
        self.points = ((), ())  # what is drawn (thinned)
        self.count = 0  # how many points the series has
        self.signature = None
        self.drawn_at = 0.0
        self.border_title = t(f"curve.{figure}")

    def show(self, xs, ys, count: int, force: bool = False) -> bool:
        """Draw when the series changed (and not too soon after the last draw). True when drawn."""
        signature = (count, xs[-1] if xs else None, ys[-1] if ys else None)
        if signature == self.signature and not force:
            return False
        if not force and time.monotonic() - self.drawn_at < MIN_REDRAW_SECONDS:
            return False
        self.signature, self.count, self.points = signature, count, (xs, ys)
        scale = 100.0 if self.figure == "mfu" else 1.0  # MFU is written as a fraction, read as a percentage
        ys = [v * scale for v in ys]
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        # the title goes on the border: Textual measures wide (CJK) characters right, plotext does not
        self.border_title = t(f"curve.{self.figure}") + (f"  {_last(ys)}" if ys else "")
        if xs:
            plt.plot(xs, ys, marker="braille")
        self.refresh()
        self.drawn_at = time.monotonic()
        return True


def _last(values) -> str:
    return f"{values[-1]:.4g}"


class Curves(Grid):
    """The 2x2 grid of curves."""

    FIGURES = ("loss", "val_bpb", "tok_per_s", "mfu")

    def compose(self) -> ComposeResult:
        for figure in self.FIGURES:
            yield Curve(figure)

    def show(self, series: dict, force: bool = False) -> int:
        """Update every curve from {figure: (steps, values, count)} (thinned); returns how many were redrawn."""
        drawn = 0
        for curve in self.query(Curve):
            xs, ys, count = series.get(curve.figure, ([], [], 0))
            drawn += curve.show(xs, ys, count, force)
        return drawn
