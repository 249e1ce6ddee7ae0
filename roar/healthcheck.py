"""`python -m roar.healthcheck HOST:PORT`: exits 0 when the gRPC server there answers its health
check with SERVING, 1 otherwise. The images' HEALTHCHECK and compose.yaml's healthchecks run it."""

from __future__ import annotations

import sys

from roar.service import is_serving


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m roar.healthcheck HOST:PORT", file=sys.stderr)
        return 2
    return 0 if is_serving(args[0]) else 1


if __name__ == "__main__":
    sys.exit(main())
