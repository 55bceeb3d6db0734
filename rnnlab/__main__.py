"""The ``rnnlab`` command: ``python -m rnnlab``, and the console script (``main``).

Its one job beyond ``rnnlab.cli.entry`` is a Ctrl-C while the command's modules import
(pydantic, PyYAML: the first half second), which no handler in them could catch yet: exit
130 with one line, as later, not a traceback."""

import sys


def main() -> None:
    try:
        from rnnlab.cli import entry
    except KeyboardInterrupt:
        print("\ninterrupted.", file=sys.stderr)
        exec("", {})  # clears CPython's mark of the interrupt: rnnlab.cli._forget_interrupts
        raise SystemExit(130) from None
    entry()


if __name__ == "__main__":
    main()
