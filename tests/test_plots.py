"""Figures: what each one draws, read back from the matplotlib figure before it is saved."""

from __future__ import annotations

import pytest

from attnstreams.run import plots


@pytest.fixture
def figures(monkeypatch) -> list:
    """Every figure plots saves, kept open for the test to read."""
    saved = []
    save = plots._save

    def keep(fig, path):
        saved.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_bands_label_reference_lines_where_drawn(tmp_path, figures):
    """hline_labels names each dashed line it has a label for, in every panel that draws it."""
    curve = ([0, 1, 2], [[0.1, 0.6, 0.97]])
    panels = {"a": {"v": curve}, "b": {"v": curve}}
    plots.plot_bands(
        panels,
        tmp_path / "f.png",
        hlines={"a": (0.5, 0.95), "b": (0.95, 0.25)},
        hline_labels={0.5: "threshold 50%", 0.95: "threshold 95%"},
    )
    (fig,) = figures
    ax_a, ax_b = fig.axes
    assert [(t.get_text(), t.get_position()[1]) for t in ax_a.texts] == [
        ("threshold 50%", 0.5),
        ("threshold 95%", 0.95),
    ]
    assert [t.get_text() for t in ax_b.texts] == ["threshold 95%"]  # 0.25: no label given
    assert len([ln for ln in ax_b.lines if ln.get_linestyle() == "--"]) == 2


def test_bands_without_labels_draw_bare_lines(tmp_path, figures):
    """The callers that pass no labels get the figure they had: dashed lines, no text."""
    plots.plot_bands({"a": {"v": ([0, 1], [[0.2, 0.4]])}}, tmp_path / "f.png", hlines=(0.5,))
    (ax,) = figures[0].axes
    assert len(ax.texts) == 0 and [ln.get_linestyle() for ln in ax.lines].count("--") == 1


def test_bands_past_the_colour_cycle_change_line_style(tmp_path, figures):
    """An 11th curve takes the 1st one's colour again (10 colours), so it is drawn dash-dotted:
    no two curves of a panel look alike."""
    curve = ([0, 1], [[0.2, 0.4]])
    plots.plot_bands({"a": {f"v{i}": curve for i in range(11)}}, tmp_path / "f.png")
    (ax,) = figures[0].axes
    look = [(ln.get_color(), ln.get_linestyle()) for ln in ax.lines]
    assert len(set(look)) == 11 and look[0][1] == "-" and look[10][1] == "-."
