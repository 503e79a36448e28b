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
MAX_POINTS = 400  # a terminal plot is at most a few hundred cells wide: thin longer series


class Curve(PlotextPlot):
    def __init__(self, figure: str, **kw):
        super().__init__(id=f"curve-{figure}", **kw)
        self.figure = figure
        self.points = ((), ())
        self.drawn_at = 0.0
        self.border_title = t(f"curve.{figure}")

    def show(self, steps, values, force: bool = False) -> bool:
        """Draw when the data changed (and not too soon after the last draw). True when drawn."""
        if (tuple(steps[-1:]), len(steps)) == (tuple(self.points[0][-1:]), len(self.points[0])) and not force:
            return False
        if not force and time.monotonic() - self.drawn_at < MIN_REDRAW_SECONDS:
            return False
        self.points = (list(steps), list(values))
        every = max(len(steps) // MAX_POINTS, 1)
        scale = 100.0 if self.figure == "mfu" else 1.0  # MFU is written as a fraction, read as a percentage
        values = [v * scale for v in values]
        xs, ys = list(steps)[::every], values[::every]
        if steps and xs[-1] != steps[-1]:
            xs.append(steps[-1])
            ys.append(values[-1])
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        # the title goes on the border: Textual measures wide (CJK) characters right, plotext does not
        self.border_title = t(f"curve.{self.figure}") + (f"  {_last(values)}" if values else "")
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
        """Update every curve from {figure: (steps, values)}; returns how many were redrawn."""
        drawn = 0
        for curve in self.query(Curve):
            steps, values = series.get(curve.figure, ((), ()))
            drawn += curve.show(steps, values, force)
        return drawn
