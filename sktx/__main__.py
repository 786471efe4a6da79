"""``python -m sktx``: the same as the ``sktx`` command."""

from sktx.cli import main

if __name__ == "__main__":
    main()
