"""``python -m skip2lora.data [NAME ...]``: fetch and verify data sets ahead of use (e.g.
before running the tests), or with ``--check`` only report which files are missing."""

from __future__ import annotations

import argparse
import sys

from .errors import DataError
from .lookup import DATA_ENV, resolve_data_dir, search_dirs
from .registry import DATASET_NAMES, canonical_name, dataset_title, load_dataset, missing_files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m skip2lora.data",
        description=f"Download (if missing) and verify data sets. Files are looked for in --data-dir, "
                    f"else ${DATA_ENV}, else the user cache; downloads go to that folder (the user "
                    f"cache if it is not writable).")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"data sets (default: all of {', '.join(DATASET_NAMES)}; also fmnist-rotNN)")
    p.add_argument("--data-dir", help=f"data root (default: ${DATA_ENV}, then the user cache)")
    p.add_argument("--check", action="store_true", help="only report missing files; download nothing")
    args = p.parse_args(argv)
    try:
        names = [canonical_name(n) for n in args.names or DATASET_NAMES]
    except ValueError as e:
        p.error(str(e))
    where = " and ".join(str(d) for d in search_dirs(resolve_data_dir(args.data_dir)))
    failed = 0
    for name in names:
        if args.check:
            missing = missing_files(name, args.data_dir)
            print(f"{dataset_title(name)}: " + (f"missing {', '.join(missing)} (searched {where})" if missing else "present"))
            failed += bool(missing)
            continue
        try:
            ds = load_dataset(name, args.data_dir)
        except DataError as e:
            print(f"{name}: error: {e}", file=sys.stderr)
            failed += 1
            continue
        sizes = ", ".join(f"{role} {len(s)}" for role, s in ds.splits().items())
        print(f"{dataset_title(name)}: ok ({sizes})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
