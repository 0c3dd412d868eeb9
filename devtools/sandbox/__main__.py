"""`python -m devtools.sandbox <name> [options]`: run one local stand-in upstream.

Names: `amplitude` (Export API), `appmetrica` (Logs API), `yandex-id` (OAuth
token check). `python -m devtools.sandbox <name> --help` lists its options.
"""

from __future__ import annotations

import importlib
import sys

#: Command name → module whose `main(argv) -> int` runs that sandbox.
SANDBOXES = {
    "amplitude": "devtools.sandbox.amplitude",
    "appmetrica": "devtools.sandbox.appmetrica",
    "yandex-id": "devtools.sandbox.yandex_id",
}

USAGE = (
    "usage: python -m devtools.sandbox {" + ",".join(SANDBOXES) + "} [options]\n"
    "  run `python -m devtools.sandbox <name> --help` for the options of one sandbox"
)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the named sandbox's `main`; 2 on an unknown or unavailable name."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    module_name = SANDBOXES.get(name)
    if module_name is None:
        print(f"unknown sandbox {name!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(
            f"the {name!r} sandbox is not available: module {module_name} is missing "
            "from this installation",
            file=sys.stderr,
        )
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
