"""Interactive figures that also render without a live kernel.

A widget only draws while a kernel runs it; an HTML export, a headless CI run or a notebook opened
without its kernel shows nothing. So every interactive figure of the course first shows its default
state as an ordinary (static) figure, then the live version below it::

    def draw(patch_size=8, patch_index=0):
        fig, ax = plt.subplots()
        ...
        return fig

    interactive_figure(draw, patch_size=IntSlider(8, 2, 16), patch_index=IntSlider(0, 0, 63))
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure


def _show(figure: Figure) -> None:
    display(figure)
    plt.close(figure)  # shown once, not again by the inline backend at the end of the cell


def interactive_figure(draw: Callable[..., Figure], **controls: widgets.ValueWidget) -> widgets.VBox:
    """Show ``draw``'s figure at the controls' default values, and return the live version.

    Args:
        draw: makes and returns a matplotlib figure from keyword arguments named like the controls.
        **controls: ipywidgets controls (sliders, dropdowns, ...), one per argument of ``draw``.

    Returns:
        A box with the controls above an output area that redraws whenever a control changes;
        make it the last expression of the cell to display it.
    """
    if not controls:
        raise TypeError("interactive_figure needs at least one control, e.g. size=IntSlider(8, 2, 16)")
    static_figure = draw(**{name: control.value for name, control in controls.items()})
    if not isinstance(static_figure, Figure):
        raise TypeError(f"draw must return a matplotlib Figure, got {type(static_figure).__name__}")
    static_figure.text(0.995, 0.005, "static preview of the default settings; the live figure is below",
                       ha="right", va="bottom", fontsize=7, color="gray")
    _show(static_figure)

    def redraw(**values):
        _show(draw(**values))

    output = widgets.interactive_output(redraw, controls)
    # Controls that do not fit on one line wrap onto the next instead of squeezing each other.
    row = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
    return widgets.VBox([row, output])
