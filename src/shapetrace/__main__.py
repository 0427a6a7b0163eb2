"""``python -m shapetrace``: the same command line as the ``shapetrace`` script."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="shapetrace")
