"""`python -m nightly run --day feedback_logs/2025-01-14` (what cron runs), `rollback`, `status`.

Run from the repository root (the paths in params.yaml are relative to it). See README, Nightly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

from clickloop.atomic import write_json
from clickloop.params import PARAMS_FILE, section
from nightly.run import EXIT_FAILED, REPORTS_DIR, NightError, NightlyConfig, run_night
from nightly.versions import VersionError, VersionStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nightly", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default ./params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="land a day of logs, dvc repro, gate, promote or keep the champion")
    run.add_argument("--day", type=Path, required=True, help="the new day's folder of UBI logs, named YYYY-MM-DD")
    rollback = commands.add_parser("rollback", help="serve the version the served one replaced (or --to ID)")
    rollback.add_argument("--to", help="a version id (see `status`)")
    status = commands.add_parser("status", help="the served version and the versions kept")
    status.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        config = section("nightly", NightlyConfig, args.params)
        if args.command == "run":
            code, report = run_night(args.day, config, args.params)
            print(report["summary"])
            return code
        store = VersionStore(config.serving_dir, config.keep_versions)
        if args.command == "rollback":
            with store.lock():
                old, new = store.rollback(args.to)
                stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
                write_json(store.root / REPORTS_DIR / f"{stamp}-rollback.json",
                           {"decision": "rollback", "from": old, "to": new, "at": stamp})
            print(f"rolled back: {new} serves (was {old})")
            return 0
        return _status(store, args.json)
    except (NightError, VersionError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


def _status(store: VersionStore, as_json: bool) -> int:
    current = store.current()
    rows = []
    for version in store.versions():
        manifest = store.manifest(version)
        window = manifest.get("window") or {}
        rows.append({"version": version, "serving": version == current, "created": manifest.get("created"),
                     "previous": manifest.get("previous"), "day": manifest.get("day"),
                     "window": [window.get("first"), window.get("last")], "bytes": manifest.get("bytes")})
    if as_json:
        print(json.dumps({"serving": current, "versions": rows}, indent=2))
        return 0
    print(f"serving: {current or 'nothing'}")
    for row in rows:
        mark = "*" if row["serving"] else " "
        print(f"{mark} {row['version']}  day {row['day']}  window {row['window'][0]}..{row['window'][1]}  "
              f"previous {row['previous']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
