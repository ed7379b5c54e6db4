"""rnncli: character-level RNN, LSTM and GRU language models in numpy.

In Python: ``rnncli.load(path)`` opens a trained model, ``rnncli.train(corpus, **settings)``
trains one (``rnncli.api``). They are imported on first use, so that ``rnn`` starts as fast.
"""

import sys
import types

__version__ = "0.1.0"

_API = ("CharModel", "load", "train")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'rnncli' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Importing the submodule ``rnncli.train`` (the training job) would set the package's
    ``train`` to that module; ``rnncli.train`` stays the function that ``__getattr__`` gives."""

    def __setattr__(self, name, value):
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
