"""Stage `ingest`: UBI logs from the configured roots into `data/ingested/` and `metrics/ingest.json`."""

from __future__ import annotations

import json
import logging

from clickloop.ingest import IngestConfig, ingest
from clickloop.params import section


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = ingest(section("ingest", IngestConfig))
    print(json.dumps({"totals": report.totals, "quarantine_reasons": report.quarantine_reasons}, indent=2))


if __name__ == "__main__":
    main()
