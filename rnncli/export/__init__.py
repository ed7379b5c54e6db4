"""``rnn export``: one self-contained HTML page that runs a model in the browser.

The page holds the weights (base64 of little-endian arrays at the chosen precision, see
``tensors``), the vocabulary, the cell's JavaScript step (``rnncli/jssteps/<cell>.js``, the
cell's ``js_step``) and the page's own script and style (``assets/``). A Content-Security-Policy
of ``default-src 'none'`` with the hashes of its one script and one style lets it load nothing.

The page runs the network as ``rnncli.model.Stepper`` does, in float64: layer 0's ``x Wx + b``
is a row of a (V, G*H) table, into which a learnt embedding is folded (``embed.W @ Wx + b``);
with ``mlp_size`` > 0 each layer's residual MLP feeds the layer above and the output.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..fileio import check_user_output, write_user_output
from ..layers import RMS_EPS
from ..model import Model, norm_places
from ..runfolder import owned_files
from ..vocab import Vocab
from .tensors import PRECISIONS, Packed, PrecisionError, pack, packed_bytes, unpack

__all__ = [
    "PRECISIONS",
    "ExportError",
    "estimate_bytes",
    "export_checkpoint",
    "export_page",
    "page_model",
    "render",
]

MAX_PAGE_BYTES = 256 * 2**20  # larger pages take browsers minutes to open, if they open at all
PAGE_FORMAT = 1


class ExportError(Exception):
    """A model that cannot be exported, or a page that cannot be written (one line)."""


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text("utf-8")


def _page_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """Name -> shape of each tensor the page stores (see ``page_tensors``), allocating none:
    the model's own (``Model.param_shapes``, MLPs included) but the embedding and layer 0's
    Wx and b, which the table replaces; with a convolution, which comes between the embedding
    and Wx, the model's own, unfolded."""
    H, V = model.hidden_size, model.vocab_size
    shapes = {} if model.conv_size else {"table": (V, model.cell_type.gates * H)}
    folded = () if model.conv_size else ("embed.W", "rnn.0.Wx", "rnn.0.b")
    own = Model.param_shapes(V, model.cell, H, model.num_layers, model.embedding_size,
                             model.mlp_size, model.norm, model.conv_size)  # fmt: skip
    return shapes | {name: shape for name, shape in own.items() if name not in folded}


def page_tensors(model: Model) -> dict[str, np.ndarray]:
    """The tensors the page runs, float64: ``table`` = (embed.W @) rnn.0.Wx + rnn.0.b, then
    the model's parameters but layer 0's Wx and b (and the embedding); with ``mlp_size`` > 0
    the MLP after each layer (``mlp.{l}.*``) too. With a convolution, the parameters as they are
    (see ``_page_shapes``)."""
    p = {name: w.astype(np.float64) for name, w in model.params.items()}
    if model.conv_size:
        return p
    with np.errstate(over="ignore", invalid="ignore"):  # ``pack`` refuses what overflowed
        table = p["rnn.0.Wx"] if not model.embedding_size else p["embed.W"] @ p["rnn.0.Wx"]
        tensors = {"table": table + p["rnn.0.b"]}
    tensors |= {name: p[name] for name in _page_shapes(model) if name != "table"}
    return tensors


def estimate_bytes(model: Model, precision: str) -> int:
    """About the size of the page, from the model's shapes alone: the base64 of every stored
    tensor plus the page's text (the estimate errs by well under a kilobyte)."""
    data = sum(4 * -(-packed_bytes(s, precision) // 3) for s in _page_shapes(model).values())
    fixed = sum(len(_asset(name)) for name in ("page.html", "page.css", "runtime.js", "page.js"))
    return data + fixed + len(model.cell_type.js_step or "") + 12 * model.vocab_size + 2_000


def _check(model: Model, precision: str) -> None:
    cell = model.cell_type
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if cell.js_step is None:
        raise ExportError(
            f"the {cell.name} cell has no JavaScript step (rnncli/jssteps/{cell.name}.js), so "
            "a page cannot run it"
        )
    size = estimate_bytes(model, precision)
    if size > MAX_PAGE_BYTES:
        smaller = [p for p in PRECISIONS if estimate_bytes(model, p) <= MAX_PAGE_BYTES]
        hint = f"; --precision {smaller[-1]} would fit" if smaller else ""
        raise ExportError(
            f"the page would be about {size / 1e6:,.0f} MB at {precision}, over the "
            f"{MAX_PAGE_BYTES / 1e6:,.0f} MB a browser can be expected to open{hint}"
        )


def _packed(model: Model, precision: str) -> dict[str, Packed]:
    try:
        return {name: pack(t, precision) for name, t in page_tensors(model).items()}
    except PrecisionError as err:
        raise ExportError(f"cannot store the weights as {precision}: {err}") from None


def page_model(model: Model, precision: str) -> Model:
    """The model as the page at ``precision`` computes it, a float64 ``Model`` without an
    embedding whose rnn.0.Wx is the decoded table (rnn.0.b zero): what the tests and the
    tolerance figures compare with the model itself."""
    decoded = {name: unpack(p) for name, p in _packed(model, precision).items()}
    if model.conv_size:  # nothing folded
        return Model.from_params(decoded, model.cell, 0.0, model.residual, model.norm)
    params = {"rnn.0.Wx": decoded.pop("table")}
    params["rnn.0.b"] = np.zeros(params["rnn.0.Wx"].shape[1])
    params |= decoded
    return Model.from_params(params, model.cell, 0.0, model.residual, model.norm)


def _json_in_html(obj) -> str:
    """JSON that can stand inside a <script> element: ASCII only, no '<', '>' or '&'."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _spec(model: Model, vocab: Vocab, precision: str, about: dict) -> dict:
    cell = model.cell_type
    tensors = {
        name: {
            "shape": list(p.shape),
            "kind": p.kind,
            "data": base64.b64encode(p.data).decode("ascii"),
            **({"scales": base64.b64encode(p.scales).decode("ascii")} if p.scales else {}),
        }
        for name, p in _packed(model, precision).items()
    }
    return {
        "format": PAGE_FORMAT,
        "cell": cell.name,
        "gates": cell.gates,
        "states": cell.states,
        "layers": model.num_layers,
        "hidden": model.hidden_size,
        "embedding": model.embedding_size,
        "mlp": model.mlp_size,
        "conv": model.conv_size,
        "residual": model.residual,
        "norm": model.norm,
        "norm_places": norm_places(model.num_layers, model.mlp_size) if model.norm_type else [],
        "norm_eps": RMS_EPS,
        "precision": precision,
        "vocab": list(vocab.chars),
        "about": {"parameters": model.num_params} | about,
        "tensors": tensors,
    }


def render(
    model: Model, vocab: Vocab, precision: str, title: str, about: dict | None = None
) -> str:
    """The page, as one string. ``about``: shown under the title (``step``, ``best_val_loss``)."""
    _check(model, precision)
    if len(vocab) != model.vocab_size:
        raise ExportError(
            f"the vocabulary has {len(vocab)} characters but the model {model.vocab_size}"
        )
    script = _asset("runtime.js") + "\n" + model.cell_type.js_step + "\n" + _asset("page.js")
    css = _asset("page.css")
    csp = (
        f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(css)}; "
        "base-uri 'none'; form-action 'none'"
    )
    spec = _json_in_html(_spec(model, vocab, precision, about or {}))
    parts = {"CSP": csp, "TITLE": html.escape(title), "CSS": css, "MODEL": spec, "SCRIPT": script}
    # one pass over the template, so that nothing inserted is read for markers again
    return re.sub(r"@@([A-Z]+)@@", lambda m: parts[m.group(1)], _asset("page.html"))


def export_page(
    model: Model,
    vocab: Vocab,
    out: str | os.PathLike,
    precision: str = "float16",
    title: str = "rnn export",
    about: dict | None = None,
    keep: str | os.PathLike | None = None,
) -> int:
    """Write the page (``render``) to ``out`` as a file the user named
    (``fileio.write_user_output``: a regular file atomically, a device or FIFO in place, never
    over one of the command's inputs) and return its size in bytes. ``keep``: the checkpoint
    read, which with the other files of its run folder the page must not replace. ExportError
    (one line) if the model cannot be exported or the page not written."""
    inputs = [] if keep is None else [keep, *owned_files(Path(keep).parent)]
    try:
        check_user_output(out, inputs)  # before the work of rendering
        data = render(model, vocab, precision, title, about).encode("utf-8")
        write_user_output(out, data, inputs)
    except OutputError as err:
        raise ExportError(str(err)) from None
    except OSError as err:
        raise ExportError(f"{out}: cannot write the page ({err.strerror or err})") from None
    return len(data)


def export_checkpoint(
    ckpt, model: Model, vocab: Vocab, out: str | os.PathLike, precision: str
) -> int:
    """``export_page`` for the model and vocabulary of ``ckpt`` (a ``checkpoint.Checkpoint``),
    titled by its run folder and file name, with its step and best validation loss."""
    path = Path(str(ckpt.path))
    about = {
        key: value
        for key in ("step", "best_val_loss")
        if isinstance(value := ckpt.meta.get(key), int | float) and math.isfinite(value)
    }
    title = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return export_page(model, vocab, out, precision, title, about, keep=path)
