"""`python -m rnncli` runs the `rnn` command."""

from .launch import main

if __name__ == "__main__":
    main()
