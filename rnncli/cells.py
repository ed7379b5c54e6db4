"""The registry of recurrent cell types: each cell is one ``Cell`` declaration.

A declaration says everything the rest of rnncli needs: the layer's parameters (names, shapes,
initialisation), its whole-window forward and backward, its one-step inference, and the names,
labels and ranges of its state arrays and gate blocks. The model, the inference ``Stepper``, the
gradient check, checkpoint validation, the parallel workers, the report's unit kinds, the memory
estimate and the config's ``model`` choices all read ``CELLS``; adding a cell type is writing its
functions and one ``register(Cell(...))``, in any module, also after rnncli is imported. The
built-in cells' maths is in ``rnncli.layers`` (the engine) and, readably, in
``rnncli.reference``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import sys
from collections.abc import Callable
from functools import partial

import numpy as np

from . import layers, scan

# Shapes are in symbols: D is the layer's input width, H the hidden size, GH the gate count
# times H. Every cell reads its input only through ``x Wx + b`` (what the engine's input
# projection, the Stepper's one-hot table and the initialisation of a one-hot input rely on);
# a cell with a recurrent product names it Wh.
INPUT_PARAMS = (("Wx", ("D", "GH")), ("b", ("GH",)))
RECURRENT_PARAM = ("Wh", ("H", "GH"))
BASE_PARAMS = (INPUT_PARAMS[0], RECURRENT_PARAM, INPUT_PARAMS[1])  # rnn, lstm, gru: Wx, Wh, b
SYMBOLS = ("D", "H", "GH")


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of activation a cell has (a state array or a gate block): its short name, what it
    is, and the range its values live in (None: unbounded; the report colours those as tanh)."""

    name: str
    label: str
    low: float | None
    high: float | None


def js_source(name: str) -> str | None:
    """The JavaScript source of cell ``name``'s inference step for ``rnn export``
    (``rnncli/jssteps/<name>.js``), or None when the package has none."""
    try:
        return (importlib.resources.files(__package__) / "jssteps" / f"{name}.js").read_text(
            encoding="utf-8"
        )
    except (FileNotFoundError, NotADirectoryError):
        return None


@dataclasses.dataclass(frozen=True)
class Cell:
    """A recurrent cell type.

    ``name``: the config's ``model`` value. ``gates``: G, blocks of H columns in Wx and b.
    ``state_kinds``: its S (B, H) state arrays, h first. ``gate_kinds``: the G gate blocks'
    kinds, in order, or none for a cell whose step leaves nothing worth showing in ``a``.
    ``params``: (name, shape in symbols of ``SYMBOLS``) of one layer's parameters, in the order
    the functions take them; ``Wx`` (D, GH) and ``b`` (GH,) are required, ``Wh`` (H, GH) is
    optional. Initialisation: matrices uniform in ±1/sqrt(H) (see ``rnncli.model.Model``),
    vectors zero, then ``init(params, H)`` changes them in place if given.
    ``forward(x, state0, weights, ws) -> h (T, B, H), final (S, B, H), cache`` and
    ``backward(dh, cache, ws) -> dx or None, dstate0 (S, B, H), gradients in weights' order``,
    with ``x`` (T, B, D) time-major rows or (T, B) indices (see ``layers.sequence_forward``).
    ``step``: the inference step, with the signature of ``layers.rnn_step_inplace``; for a cell
    without Wh, ``u`` and ``W_T`` are None. It overwrites ``a`` with the gate activations that
    the report shows. ``stackable``: whether ``x Wx`` can join the recurrent product in the
    Stepper (``[Wx; Wh]``), which needs the pre-activations to be ``x Wx + h Wh + b``.
    ``forget_gate``: the index of the gate block that is a forget gate, whose bias the config's
    ``forget_bias`` sets at initialisation, or None for a cell without one.
    ``js_step``: the JavaScript source of the inference step for ``rnn export``, or None.
    ``module``: the module that registers the cell, which the parallel workers import; filled
    in by ``register``.
    """

    name: str
    gates: int
    state_kinds: tuple[Kind, ...]
    gate_kinds: tuple[Kind, ...]
    forward: Callable
    backward: Callable
    step: Callable
    params: tuple[tuple[str, tuple[str, ...]], ...] = BASE_PARAMS
    stackable: bool = False
    init: Callable[[dict[str, np.ndarray], int], None] | None = None
    forget_gate: int | None = None
    js_step: str | None = None
    module: str = ""

    @property
    def states(self) -> int:
        """S, the number of state arrays."""
        return len(self.state_kinds)

    @property
    def recurrent(self) -> bool:
        """Whether the cell has a recurrent product ``h_{t-1} Wh``."""
        return "Wh" in self.param_names

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)

    @property
    def kinds(self) -> dict[str, Kind]:
        """Its activation kinds by name: the state arrays, then the gate blocks."""
        return {k.name: k for k in self.state_kinds + self.gate_kinds}

    def shapes(self, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter of one layer whose input has ``input_size`` features."""
        sizes = {"D": input_size, "H": hidden_size, "GH": self.gates * hidden_size}
        return {name: tuple(sizes[s] for s in shape) for name, shape in self.params}


CELLS: dict[str, Cell] = {}


def register(cell: Cell) -> Cell:
    """Add ``cell`` to ``CELLS`` (replacing one of the same name) and return it; ValueError if
    the declaration does not hold together."""
    declared = dict(cell.params)

    def bad(why: str) -> ValueError:
        return ValueError(f"cell {cell.name!r}: {why}")

    if len(declared) != len(cell.params):
        raise bad("parameter names must be unique")
    for name, shape in INPUT_PARAMS:
        if declared.get(name) != shape:
            raise bad(f"needs the parameter {name} of shape {shape}")
    if "Wh" in declared and declared["Wh"] != RECURRENT_PARAM[1]:
        raise bad(f"its Wh must have shape {RECURRENT_PARAM[1]}")
    if any(not shape or not set(shape) <= set(SYMBOLS) for shape in declared.values()):
        raise bad(f"parameter shapes must be made of the symbols {', '.join(SYMBOLS)}")
    if cell.gates < 1 or cell.states < 1:
        raise bad("needs at least one gate block and one state array")
    if len(cell.gate_kinds) not in (0, cell.gates):
        raise bad(f"names none or all of its {cell.gates} gate blocks")
    if cell.state_kinds[0].name != "h":
        raise bad("its first state array must be h")
    if len(cell.kinds) != cell.states + len(cell.gate_kinds):
        raise bad("its state and gate names must be unique")
    if cell.stackable and "Wh" not in declared:
        raise bad("only a cell with Wh can stack x Wx into its recurrent product")
    if cell.forget_gate is not None and not 0 <= cell.forget_gate < cell.gates:
        raise bad(f"forget_gate must be one of its {cell.gates} blocks")
    if not cell.module:
        caller = sys._getframe(1).f_globals.get("__name__", "")  # noqa: SLF001 (who registers)
        cell = dataclasses.replace(cell, module=caller)
    CELLS[cell.name] = cell
    return cell


def get(name: str) -> Cell:
    """The cell called ``name``; ValueError naming the choices if there is none."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose from {', '.join(CELLS)}") from None


def _engine(core: layers.RecurrentCore) -> dict[str, Callable]:
    """The forward and backward of a cell that the engine's sequence skeleton runs."""
    return dict(
        forward=partial(layers.sequence_forward, core),
        backward=partial(layers.sequence_backward, core),
    )


def _scan(core: scan.ScanCore) -> dict[str, Callable]:
    """The forward, backward and inference step of a cell whose gates see the input only."""
    return dict(
        forward=partial(scan.scan_forward, core),
        backward=partial(scan.scan_backward, core),
        step=partial(scan.scan_step_inplace, core),
    )


H_TANH = Kind("h", "hidden state h", -1.0, 1.0)
H_FREE = Kind("h", "hidden state h", None, None)
C_STATE = Kind("c", "cell state c", None, None)


def _sigmoid_gate(name: str, label: str) -> Kind:
    return Kind(name, label, 0.0, 1.0)


register(Cell("rnn", 1, (H_TANH,), (),
              step=layers.rnn_step_inplace, stackable=True, js_step=js_source("rnn"),
              **_engine(layers.RNN_CORE)))  # fmt: skip
register(Cell("lstm", 4, (H_TANH, C_STATE),
              (_sigmoid_gate("i", "input gate i"), _sigmoid_gate("f", "forget gate f"),
               _sigmoid_gate("o", "output gate o"), Kind("g", "candidate g", -1.0, 1.0)),
              step=layers.lstm_step_inplace, stackable=True, forget_gate=1,
              js_step=js_source("lstm"), **_engine(layers.LSTM_CORE)))  # fmt: skip
register(Cell("gru", 3, (H_TANH,),
              (_sigmoid_gate("r", "reset gate r"), _sigmoid_gate("z", "update gate z"),
               Kind("n", "candidate n", -1.0, 1.0)),
              step=layers.gru_step_inplace, params=BASE_PARAMS + (("bh", ("H",)),),
              js_step=js_source("gru"), **_engine(layers.GRU_CORE)))  # fmt: skip
register(Cell("mingru", 2, (H_FREE,),
              (_sigmoid_gate("z", "update gate z"), Kind("n", "candidate h~", None, None)),
              params=INPUT_PARAMS, js_step=js_source("mingru"),
              **_scan(scan.MINGRU)))  # fmt: skip
register(Cell("minlstm", 3, (H_FREE,),
              (_sigmoid_gate("f", "forget gate f/(f+i)"), _sigmoid_gate("i", "input gate i/(f+i)"),
               Kind("n", "candidate h~", None, None)),
              params=INPUT_PARAMS, forget_gate=0, js_step=js_source("minlstm"),
              **_scan(scan.MINLSTM)))  # fmt: skip
