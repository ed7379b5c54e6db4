"""``rnn report``: one self-contained HTML page about a trained model.

``build_page`` gathers what the page shows (the checkpoint's facts, samples, the network's
activations on a text, the character map) and ``page`` lays it out; ``charts`` draws the
training curves as SVG; the template, CSS and JavaScript are files in ``assets/``.
"""

from __future__ import annotations

from ..analysis import analyse, character_map
from ..checkpoint import Checkpoint
from ..excerpt import Excerpt
from ..facts import checkpoint_facts
from ..model import Model
from ..runlog import History
from ..sample import sample_text
from ..vocab import Vocab
from .page import Sample, fact_rows, render, write_page

__all__ = ["SAMPLE_TEMPERATURES", "Sample", "build_page", "fact_rows", "render", "write_page"]

SAMPLE_TEMPERATURES = (0.5, 0.8, 1.0)


def build_page(
    title: str,
    ckpt: Checkpoint,
    model: Model,
    vocab: Vocab,
    text: Excerpt,
    history: History,
    seed: int,
    length: int,
    prime: str,
) -> str:
    """The report page of ``ckpt``: samples of ``length`` characters after ``prime`` at each of
    ``SAMPLE_TEMPERATURES`` (each as ``rnn sample --seed SEED`` draws it), and what the network
    does on ``text``."""
    samples = []
    for temperature in SAMPLE_TEMPERATURES:
        drawn = sample_text(model, vocab, length, prime, temperature=temperature, seed=seed)
        samples.append(Sample(temperature, seed, drawn))
    return render(
        title=title,
        facts=fact_rows(checkpoint_facts(ckpt, model)),
        vocab=vocab.chars,
        config=ckpt.config,
        history=history,
        samples=samples,
        analysis=analyse(model, vocab, text.text),
        excerpt_source=text.source,
        character_map=character_map(model),
    )
