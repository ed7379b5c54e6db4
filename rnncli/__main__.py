"""`python -m rnncli` runs the `rnn` command."""

from .cli import main

if __name__ == "__main__":
    main()
