"""``rnn report``: one self-contained HTML page about a trained model.

``page`` lays the page out from the numbers it is given; ``charts`` draws the training curves
as SVG; the template, CSS and JavaScript are files in ``assets/``.
"""

from .page import Sample, facts, render, write_page

__all__ = ["Sample", "facts", "render", "write_page"]
