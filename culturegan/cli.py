"""The `culturegan` command line."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="culturegan", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="show versions, compiled libraries and usable backends per op")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from culturegan import doctor

        return doctor.main()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
