"""`python -m devtools.sandbox.amplitude`: the same as `python -m devtools.sandbox amplitude`."""

from devtools.sandbox.amplitude.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
