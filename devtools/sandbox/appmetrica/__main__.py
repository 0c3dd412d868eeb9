"""`python -m devtools.sandbox.appmetrica`: the same as `python -m devtools.sandbox appmetrica`."""

from devtools.sandbox.appmetrica.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
