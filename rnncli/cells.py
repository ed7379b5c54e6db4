"""The registry of recurrent cell types: each cell is one ``Cell`` declaration.

The model, the inference ``Stepper``, the gradient check, the parallel workers and the config's
``model`` choices all read ``CELLS``; adding a cell type is writing its functions and one
``register(Cell(...))``. The built-in cells' maths is in ``rnncli.layers`` (the engine) and,
readably, in ``rnncli.reference``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from importlib import resources

import numpy as np

from . import layers

# Every cell's parameters start with these three, which the engine's input projection, the
# Stepper and the initialisation rely on. Shapes are in symbols: D is the layer's input width,
# H the hidden size, GH the gate count times H.
BASE_PARAMS = (("Wx", ("D", "GH")), ("Wh", ("H", "GH")), ("b", ("GH",)))


@dataclasses.dataclass(frozen=True)
class Cell:
    """A recurrent cell type.

    ``name``: the config's ``model`` value. ``gates``: G, blocks of H columns in Wx, Wh and b.
    ``states``: S, the (B, H) arrays of its state, h first. ``params``: (name, shape in symbols)
    of one layer's parameters, in the order the functions take them, ``BASE_PARAMS`` first; any
    after them are vectors of H.
    ``forward(x, state0, weights, ws) -> h (T, B, H), final (S, B, H), cache`` and
    ``backward(dh, cache, ws) -> dx or None, dstate0 (S, B, H), gradients in weights' order``,
    with ``x`` (T, B, D) time-major rows or (T, B) indices (see ``layers.sequence_forward``).
    ``step``: the inference step, with the signature of ``layers.rnn_step_inplace``.
    ``stackable``: whether ``x Wx`` can join the recurrent product in the Stepper
    (``[Wx; Wh]``), which needs the pre-activations to be ``x Wx + h Wh + b``.
    ``init(params, H)``: changes the default initialisation of one layer's parameters in place
    (see ``rnncli.model.Model``), or None.
    ``forget_gate``: the index of the gate block that is a forget gate, whose bias the config's
    ``forget_bias`` sets at initialisation, or None for a cell without one.
    """

    name: str
    gates: int
    states: int
    forward: Callable
    backward: Callable
    step: Callable
    stackable: bool
    params: tuple[tuple[str, tuple[str, ...]], ...] = BASE_PARAMS
    init: Callable[[dict[str, np.ndarray], int], None] | None = None
    forget_gate: int | None = None
    js_step: str | None = None  # its inference step in JavaScript, for rnn export (js_source)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)

    def shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter of one layer whose input has ``input_size`` features."""
        sizes = {"D": input_size, "H": hidden_size, "GH": self.gates * hidden_size}
        return {name: tuple(sizes[s] for s in shape) for name, shape in self.params}


CELLS: dict[str, Cell] = {}


def register(cell: Cell) -> Cell:
    """Add ``cell`` to ``CELLS`` (replacing one of the same name) and return it."""
    if cell.params[:3] != BASE_PARAMS:
        raise ValueError(f"cell {cell.name!r}: its parameters must start with {BASE_PARAMS}")
    if any(shape != ("H",) for _, shape in cell.params[3:]):
        raise ValueError(f"cell {cell.name!r}: parameters after Wx, Wh, b must be ('H',) vectors")
    if cell.gates < 1 or cell.states < 1:
        raise ValueError(f"cell {cell.name!r}: needs at least one gate block and one state array")
    if cell.forget_gate is not None and not 0 <= cell.forget_gate < cell.gates:
        raise ValueError(f"cell {cell.name!r}: forget_gate must be one of its {cell.gates} blocks")
    CELLS[cell.name] = cell
    return cell


def get(name: str) -> Cell:
    """The cell called ``name``; ValueError naming the choices if there is none."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose from {', '.join(CELLS)}") from None


def js_source(name: str) -> str | None:
    """The JavaScript inference step shipped for the cell ``name`` (``rnncli/jssteps/<name>.js``,
    whose contract that folder's files state), or None when there is none."""
    try:
        return resources.files(__package__).joinpath("jssteps", f"{name}.js").read_text("utf-8")
    except FileNotFoundError:
        return None


def _engine(core: layers.RecurrentCore) -> dict[str, Callable]:
    """The forward and backward of a cell that the engine's sequence skeleton runs."""
    return dict(
        forward=partial(layers.sequence_forward, core),
        backward=partial(layers.sequence_backward, core),
    )


register(Cell("rnn", gates=1, states=1, step=layers.rnn_step_inplace, stackable=True,
              js_step=js_source("rnn"), **_engine(layers.RNN_CORE)))  # fmt: skip
register(Cell("lstm", gates=4, states=2, step=layers.lstm_step_inplace, stackable=True,
              forget_gate=1, js_step=js_source("lstm"), **_engine(layers.LSTM_CORE)))  # fmt: skip
register(Cell("gru", gates=3, states=1, step=layers.gru_step_inplace, stackable=False,
              params=BASE_PARAMS + (("bh", ("H",)),), js_step=js_source("gru"),
              **_engine(layers.GRU_CORE)))  # fmt: skip
