"""How much each learner learns per step, on identical batches: ``python -m tests.bench.per_step``.

Issue 17's per-step investigation. Every learner trains on the same sequence of windows (a
fresh ``rnncli.batches.BatchIterator`` over the same training split: B = T = 50 by default, the
hidden state carried and reset when the streams restart, as in rnncli's trainer), with Adam at
2e-3 and each gradient element clipped to [-5, 5] unless it says otherwise, and every
``--eval-every`` steps it is scored on the same fixed sample of the validation split: its first
``--val-chars`` characters, read as ``eval_batches`` with the state carried. The curves then
differ only by what the learners are, and wall time plays no part: a busy machine slows the
run, it does not change the figures.

Learners (``LEARNERS``): rnncli as ``rnn train`` trains it, PyTorch as a PyTorch user writes it
(``nn.Embedding(V, H)`` -> ``nn.LSTM`` -> ``nn.Linear``), rnncli's exact PyTorch twin, and
rnncli with one change, or two together (``tests.bench.variants``). ``--json`` keeps the curves;
``--from-json`` prints the tables and draws the chart of curves kept by earlier runs.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from rnncli import cells, optim
from rnncli.batches import BatchIterator, eval_batches
from rnncli.config import Config
from rnncli.model import Model
from rnncli.optim import Adam, clip_gradients
from rnncli.schedules import cosine_rate
from tests.bench import curves, torch_models, variants


@dataclass(frozen=True)
class Settings:
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 2
    batch: int = 50
    seq: int = 50
    lr: float = 2e-3
    clip: float = 5.0
    steps: int = 1500
    eval_every: int = 250
    val_chars: int = 100_000
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.cell} {self.layers}x{self.hidden}"


# ----------------------------------------------------------------------------------------------
# Scoring: mean nats per character over a fixed text, state carried from window to window


def validation_loss(score_window, data: np.ndarray, batch: int, seq: int) -> float:
    """Mean nats per character over ``data``, read as ``eval_batches(data, batch, seq)`` with the
    state carried. ``score_window(x, y, mask, state)`` returns (summed nats of the targets where
    mask is True, final state); the first state is None."""
    state, total, count = None, 0.0, 0
    for x, y, mask in eval_batches(data, batch, seq):
        nats, state = score_window(x, y, mask, state)
        total += nats
        count += int(mask.sum())
    return total / count


def numpy_window_scorer(model):
    """For a ``Model`` or a model of ``tests.bench.variants``."""

    def score_window(x, y, mask, state):
        state = model.zero_state(x.shape[0]) if state is None else state
        loss, state, _ = model.forward(x, y, state, mask=mask)  # mean over the masked targets
        return loss * int(mask.sum()), state

    return score_window


def torch_window_scorer(model: torch_models.CharModel):
    @torch.no_grad()
    def score_window(x, y, mask, state):
        logits, state = model(torch.from_numpy(x), state)
        nats = F.cross_entropy(
            logits.flatten(0, 1), torch.from_numpy(y).flatten(), reduction="none"
        )
        return float(nats[torch.from_numpy(mask).flatten()].double().sum()), state

    return score_window


# ----------------------------------------------------------------------------------------------
# Learners: one training step on a window, and a scorer


class NumpyLearner:
    """A numpy model trained as rnncli's trainer does: forward from the carried state,
    backward, clip, update."""

    def __init__(self, model, optimizer, clip_mode: str, clip: float, lr_factor=None):
        self.model, self.optimizer = model, optimizer
        self.clip_mode, self.clip = clip_mode, clip
        self.state = None
        # lr_factor(step) scales the rate from its initial value before each step, if given
        self._lr, self._lr_factor, self._step = optimizer.lr, lr_factor, 0
        # dropout masks are drawn in training only, from the model's seed
        self._rng = np.random.default_rng(1) if getattr(model, "dropout", 0) else None

    def train_step(self, x, y, restart: bool) -> float:
        if restart or self.state is None:
            self.state = self.model.zero_state(x.shape[0])
        if self._lr_factor is not None:
            self.optimizer.lr = self._lr * self._lr_factor(self._step)
        self._step += 1
        loss, self.state, cache = self.model.forward(x, y, self.state, rng=self._rng)
        grads, _ = self.model.backward(cache)
        clip_gradients(grads, self.clip_mode, self.clip)
        self.optimizer.step(self.model.params, grads)
        return loss

    def scorer(self):
        return numpy_window_scorer(self.model)


class TorchLearner:
    """A PyTorch model trained as a PyTorch user does (``torch_models.train_step_fn``'s maths),
    with clipping by value or by norm; parameters whose ``requires_grad`` is False stay put."""

    def __init__(self, model: torch_models.CharModel, lr: float, clip_mode: str, clip: float):
        self.model, self.clip_mode, self.clip = model, clip_mode, clip
        self.trained = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trained, lr=lr)
        self.state = None

    def train_step(self, x, y, restart: bool) -> float:
        if restart:
            self.state = None
        loss, final = self.model.loss(torch.from_numpy(x), torch.from_numpy(y), self.state)
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_mode == "value":
            torch.nn.utils.clip_grad_value_(self.trained, self.clip)
        else:
            torch.nn.utils.clip_grad_norm_(self.trained, self.clip)
        self.optimizer.step()
        self.state = torch_models.detach(final)
        return loss.item()

    def scorer(self):
        return torch_window_scorer(self.model)


# ----------------------------------------------------------------------------------------------
# The registry of learners: name -> what it is and how to build it for (vocab size, settings)


@dataclass(frozen=True)
class Learner:
    framework: str  # "rnncli" (numpy) or "PyTorch"
    description: str
    build: Callable[[int, Settings], object]


def _rnncli(
    init: Callable[[Model, int], None] | None = None,
    clip_mode: str = "value",
    groups: Callable[[Model], dict[float, set[str]]] | None = None,
    make_adam=Adam,
    cosine_floor: float | None = None,
    dropout: float = 0.0,
):
    """A builder of the investigation's baseline, rnncli as it trained before issue 17 (the
    LSTM's forget-gate bias 1, one learning rate for every parameter), with at most these
    changes: ``init`` rewrites parameters of the fresh model, ``groups`` gives some parameters a
    learning-rate factor (factor -> names, as the optimizer's ``rate_factors``), ``cosine_floor``
    decays the rate, ``dropout``. ``make_adam(params, lr, rate_factors)`` builds the optimizer."""

    def build(vocab_size: int, s: Settings) -> NumpyLearner:
        forget_bias = 1.0 if cells.get(s.cell).forget_gate is not None else 0.0
        model = Model(vocab_size, s.cell, s.hidden, s.layers, dropout, seed=s.seed,
                      forget_bias=forget_bias)  # fmt: skip
        if init is not None:
            init(model, s.seed)
        named = {} if groups is None else groups(model)
        factors = {name: factor for factor, names in named.items() for name in names}
        optimizer = make_adam(model.params, s.lr, factors)
        factor = None
        if cosine_floor is not None:
            factor = partial(_cosine_factor, steps=s.steps, floor=cosine_floor)
        return NumpyLearner(model, optimizer, clip_mode, s.clip, factor)

    return build


def _rnn_train(vocab_size: int, s: Settings) -> NumpyLearner:
    """rnncli as ``rnn train`` trains it today: its defaults but for the settings ``s``."""
    cfg = Config.from_dict(
        {"model": s.cell, "hidden_size": s.hidden, "num_layers": s.layers, "batch_size": s.batch,
         "seq_length": s.seq, "learning_rate": s.lr, "grad_clip": s.clip, "seed": s.seed},
        source="per-step benchmark",
    )  # fmt: skip
    model = Model.from_config(cfg, vocab_size)
    return NumpyLearner(model, optim.from_config(cfg, model.params), cfg.grad_clip_mode, s.clip)


def _embedded(embedding_size: int, init: Callable | None = None):
    def build(vocab_size: int, s: Settings) -> NumpyLearner:
        model = variants.EmbeddedLSTM(vocab_size, embedding_size, s.hidden, s.layers, seed=s.seed)
        if init is not None:
            init(model, s.seed)
        return NumpyLearner(model, Adam(model.params, s.lr), "value", s.clip)

    return build


def _torch(one_hot_input: bool = False, clip_mode: str = "value"):
    def build(vocab_size: int, s: Settings) -> TorchLearner:
        torch.manual_seed(s.seed)
        model = torch_models.CharModel(s.cell, vocab_size, s.hidden, s.layers, one_hot_input)
        return TorchLearner(model, s.lr, clip_mode, s.clip)

    return build


def _torch_twin(vocab_size: int, s: Settings) -> TorchLearner:
    twin = torch_models.twin_of(Model(vocab_size, s.cell, s.hidden, s.layers, seed=s.seed))
    for name, p in twin.named_parameters():
        if name.startswith("rnn.bias_hh") and s.cell != "gru":
            p.requires_grad_(False)  # rnncli has one bias vector: b_hh stays 0
    return TorchLearner(twin, s.lr, "value", s.clip)


def _biases(model: Model) -> set[str]:
    return {name for name in model.params if name.startswith("rnn.") and name.endswith(".b")}


def _cosine_factor(step: int, steps: int, floor: float) -> float:
    """The rate's factor before step ``step`` (from 0) of ``steps``: rnn train's cosine
    schedule, without warm-up."""
    return cosine_rate(1.0, floor, 0, step + 1, (step + 1) / steps)


def _doubled_with_wx0_step16(model: Model) -> dict[float, set[str]]:
    """Every rate doubled (Adam at 4e-3), rnn.0.Wx's 16x that."""
    return {2.0: set(model.params) - {"rnn.0.Wx"}, 32.0: {"rnn.0.Wx"}}


LEARNERS: dict[str, Learner] = {
    "rnncli": Learner("rnncli", "rnncli as `rnn train` trains it", _rnn_train),
    "rnncli-before": Learner(
        "rnncli", "rnncli before issue 17: forget-gate bias 1, one learning rate", _rnncli()
    ),
    "torch": Learner(
        "PyTorch", "PyTorch user's model: nn.Embedding(V, H) -> nn.LSTM -> nn.Linear", _torch()
    ),
    "torch-twin": Learner(
        "PyTorch", "rnncli's exact twin in PyTorch: same initial weights, one bias", _torch_twin
    ),
    "torch-onehot": Learner(
        "PyTorch", "one-hot into nn.LSTM, PyTorch's default initialisation", _torch(True)
    ),
    "embed64": Learner(
        "rnncli", "learnt embedding E = 64 before layer 0 (N(0, 1), then ±1/sqrt(H))", _embedded(64)
    ),
    "embed128": Learner(
        "rnncli",
        "learnt embedding E = 128 before layer 0 (E = H at 2x128, as PyTorch's model)",
        _embedded(128),
    ),
    "wx0-0.25": Learner(
        "rnncli",
        "layer 0's one-hot weights initialised in ±0.25 (rnncli: ±1)",
        _rnncli(init=lambda m, seed: variants.init_layer0_scale(m, 0.25, seed)),
    ),
    "wx0-step4": Learner(
        "rnncli",
        "layer 0's one-hot weights take 4x Adam's step (as if stored as 4 P, P = Wx / 4)",
        _rnncli(groups=lambda m: {4.0: {"rnn.0.Wx"}}),
    ),
    "wx0-step16": Learner(
        "rnncli",
        "layer 0's one-hot weights take 16x Adam's step",
        _rnncli(groups=lambda m: {16.0: {"rnn.0.Wx"}}),
    ),
    "two-biases": Learner(
        "rnncli",
        "two bias vectors per layer, as PyTorch: the sum moves 2x Adam's step",
        _rnncli(groups=lambda m: {2.0: _biases(m)}),
    ),
    "torch-biases": Learner(
        "rnncli",
        "biases as PyTorch's two vectors: start as the sum of two U(±1/sqrt(H)), no forget-gate "
        "1, and move 2x Adam's step",
        _rnncli(init=variants.init_torch_biases, groups=lambda m: {2.0: _biases(m)}),
    ),
    "forget-0": Learner(
        "rnncli",
        "no forget-gate bias of 1: every bias starts at 0",
        _rnncli(init=variants.init_no_forget_bias),
    ),
    "torch-biases+wx0-step16": Learner(
        "rnncli",
        "torch-biases and wx0-step16 together",
        _rnncli(
            init=variants.init_torch_biases,
            groups=lambda m: {2.0: _biases(m), 16.0: {"rnn.0.Wx"}},
        ),
    ),
    "forget-0+wx0-step16": Learner(
        "rnncli",
        "forget-0 and wx0-step16 together",
        _rnncli(init=variants.init_no_forget_bias, groups=lambda m: {16.0: {"rnn.0.Wx"}}),
    ),
    "embed64+forget-0": Learner(
        "rnncli", "embed64 and forget-0 together", _embedded(64, variants.init_no_forget_bias)
    ),
    "embed128+forget-0": Learner(
        "rnncli", "embed128 and forget-0 together", _embedded(128, variants.init_no_forget_bias)
    ),
    "lr-4e-3": Learner(
        "rnncli",
        "rnncli with Adam at 4e-3 (everything else as rnn train)",
        _rnncli(groups=lambda m: {2.0: set(m.params)}),
    ),
    "wx0-step64": Learner(
        "rnncli",
        "layer 0's one-hot weights take 64x Adam's step",
        _rnncli(groups=lambda m: {64.0: {"rnn.0.Wx"}}),
    ),
    "embed256+forget-0": Learner(
        "rnncli",
        "learnt embedding E = 256 (E = H at 2x256, as PyTorch's model) and forget-0",
        _embedded(256, variants.init_no_forget_bias),
    ),
    "forget-0+wx0-step16+lr-4e-3": Learner(
        "rnncli",
        "forget-0 and wx0-step16 with Adam at 4e-3",
        _rnncli(init=variants.init_no_forget_bias, groups=_doubled_with_wx0_step16),
    ),
    "forget-0+wx0-step16+cosine": Learner(
        "rnncli",
        "forget-0 and wx0-step16, the rate decayed by a cosine to 0.1x over the run",
        _rnncli(
            init=variants.init_no_forget_bias,
            groups=lambda m: {16.0: {"rnn.0.Wx"}},
            cosine_floor=0.1,
        ),
    ),
    **{
        f"forget-0+wx0-step16+lr-4e-3+cosine{suffix}": Learner(
            "rnncli",
            f"forget-0 and wx0-step16 with Adam at 4e-3, decayed by a cosine to 0.1x over the "
            f"run, dropout {dropout:g}",
            _rnncli(
                init=variants.init_no_forget_bias,
                groups=_doubled_with_wx0_step16,
                cosine_floor=0.1,
                dropout=dropout,
            ),
        )
        for suffix, dropout in (("", 0.0), ("+dropout-0.1", 0.1), ("+dropout-0.25", 0.25))
    },
    "orthogonal": Learner(
        "rnncli",
        "recurrent weights: orthogonal gate blocks (rnncli: uniform ±1/sqrt(H))",
        _rnncli(init=variants.init_orthogonal_recurrent),
    ),
    "clip-norm": Learner(
        "rnncli", "gradient clipped by global norm 5 instead of by value", _rnncli(clip_mode="norm")
    ),
    "adam-torch-eps": Learner(
        "rnncli",
        "Adam with PyTorch's placement of epsilon (after the bias correction)",
        _rnncli(make_adam=variants.TorchAdam),
    ),
    "adam-no-correction": Learner(
        "rnncli",
        "Adam without bias correction",
        _rnncli(
            make_adam=lambda p, lr, factors: variants.TorchAdam(
                p, lr, factors, bias_correction=False
            )
        ),
    ),
}


# ----------------------------------------------------------------------------------------------
# A curve


def run_curve(learner, train_data: np.ndarray, sample: np.ndarray, s: Settings, say=print):
    """Train ``learner`` for ``s.steps`` steps on a fresh BatchIterator over ``train_data``;
    return [(step, validation loss on ``sample``)] every ``s.eval_every`` steps and at the end,
    and the mean training loss of the last ``s.eval_every`` steps."""
    batches = BatchIterator(train_data, s.batch, s.seq)
    points, recent = [], []
    for step in range(1, s.steps + 1):
        restart = batches.index == 0
        x, y = batches.next_batch()
        loss = learner.train_step(x, y, restart)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss} at step {step}")
        recent = [*recent[-(s.eval_every - 1) :], loss]
        if step % s.eval_every == 0 or step == s.steps:
            val = validation_loss(learner.scorer(), sample, s.batch, s.seq)
            points.append((step, val))
            say(f"    step {step:5}: train {np.mean(recent):.4f}, validation {val:.4f}")
    return points


def measure(names, vocab_size, train_data, val_data, settings: Settings, seeds, say=print):
    """Curves of the learners ``names`` for each seed: a list of result records."""
    sample = val_data[: settings.val_chars]
    results = []
    for seed in seeds:
        for name in names:
            s = replace(settings, seed=seed)
            say(f"  {name} (seed {seed}): {LEARNERS[name].description}")
            points = run_curve(LEARNERS[name].build(vocab_size, s), train_data, sample, s, say)
            results.append(
                {
                    "learner": name,
                    "seed": seed,
                    "settings": asdict(s),
                    "val_chars": len(sample),
                    "points": points,
                }
            )
    return results


# ----------------------------------------------------------------------------------------------
# Tables and the chart


def chart(results: list[dict], title: str) -> str:
    """The curves as an SVG chart: one colour per learner, its first seed drawn thick and the
    others thin, PyTorch's dashed."""
    learners = list(dict.fromkeys(r["learner"] for r in results))
    first_seed = {
        name: min(r["seed"] for r in results if r["learner"] == name) for name in learners
    }
    series = [
        curves.Series(
            curves.label(r),
            [tuple(p) for p in r["points"]],
            dashed=LEARNERS[r["learner"]].framework == "PyTorch",
            colour=curves.PALETTE[learners.index(r["learner"]) % len(curves.PALETTE)],
            thin=r["seed"] != first_seed[r["learner"]],
        )
        for r in results
    ]
    return curves.svg_chart(
        series,
        title=title,
        x_label="training steps (B = T = 50)",
        y_label="validation loss (nats/char)",
    )


def load_results(paths: list[Path]) -> list[dict]:
    """The result records kept by earlier ``--json`` runs, each with its run's machine facts."""
    results = []
    for path in paths:
        kept = json.loads(path.read_text(encoding="utf-8"))
        results.extend({"machine": kept.get("machine"), **r} for r in kept["results"])
    return results


def usage_error(message: str, module: str = "tests.bench.per_step") -> NoReturn:
    """One line on stderr and exit status 2, as argparse does for its own usage errors."""
    print(f"python -m {module}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    from rnncli.corpus import load_corpus, split_corpus
    from tests.bench import markdown
    from tests.bench.run_bench import start

    def options(parser):
        parser.add_argument(
            "--learners",
            help=f"comma-separated, from: {', '.join(LEARNERS)} [default: rnncli,torch; with "
            "--from-json: all kept]",
        )
        parser.add_argument("--hidden", type=int, default=Settings.hidden)
        parser.add_argument("--steps", type=int, default=Settings.steps)
        parser.add_argument("--eval-every", type=int, default=Settings.eval_every)
        parser.add_argument("--val-chars", type=int, default=Settings.val_chars)
        parser.add_argument("--seeds", default="0", help="comma-separated [default: 0]")
        parser.add_argument("--from-json", type=Path, nargs="+", help="curves of earlier runs")
        parser.add_argument("--svg", type=Path, help="draw the curves into this SVG file")
        parser.add_argument("--title", help="the chart's title")

    args, facts = start(
        "Validation loss per step on identical batches.", "tests.bench.per_step", options
    )
    names = (args.learners or ("" if args.from_json else "rnncli,torch")).split(",")
    unknown = [n for n in names if n and n not in LEARNERS]
    if unknown:
        usage_error(f"unknown learners: {', '.join(unknown)}")
    for option in ("hidden", "steps", "eval_every", "val_chars"):
        if getattr(args, option) < 1:
            usage_error(f"--{option.replace('_', '-')} must be at least 1")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        usage_error(f"--seeds: not a comma-separated list of integers: {args.seeds!r}")
    if args.from_json:
        try:
            results = load_results(args.from_json)
        except (OSError, ValueError, KeyError, TypeError) as err:
            usage_error(f"--from-json: cannot read the kept curves ({err})")
        if names != [""]:  # those named, in the order named
            results = [r for r in results if r["learner"] in names]
            results.sort(key=lambda r: (names.index(r["learner"]), r["seed"]))
    else:
        settings = Settings(
            hidden=args.hidden,
            steps=args.steps,
            eval_every=args.eval_every,
            val_chars=args.val_chars,
        )
        with tempfile.TemporaryDirectory(prefix="rnncli-per-step-") as folder:
            corpus = load_corpus(args.corpus, Path(folder))
            vocab_size, data = len(corpus.vocab), np.array(corpus.data)  # off the memory map
            del corpus
        train_data, val_data, _ = split_corpus(data, 0.1, 0.0)
        print(
            f"{settings.name}, B = T = 50, Adam 2e-3, clip 5; validation on the first "
            f"{min(len(val_data), settings.val_chars)} characters of the last 10% of "
            f"{markdown.shown_path(args.corpus)}"
        )
        results = measure(names, vocab_size, train_data, val_data, settings, seeds)
        results = [{"machine": facts, **r} for r in results]
    if not results:
        usage_error("no curves to show")
    print(curves.curve_table(results))
    if args.json:
        payload = {"results": results}
        curves.write_atomic(args.json, json.dumps(payload, indent=1) + "\n")
    if args.svg:
        s = results[0]["settings"]
        title = args.title or f"{s['cell']} {s['layers']}x{s['hidden']}: validation loss per step"
        curves.write_atomic(args.svg, chart(results, title))


if __name__ == "__main__":
    main()
