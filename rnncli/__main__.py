"""`python -m rnncli` runs the `rnn` command."""

from .cli import main

main()
