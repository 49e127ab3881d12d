"""The production loop: one command a timer runs each night (`python -m nightly run --day ...`) that lands
a day of UBI logs, retrains with `dvc repro`, and promotes the retrained artifacts into a new serving
version only when a gate finds them not worse than the serving ones beyond noise; `rollback` and
`status` manage the versions. `indexing.serving.ServingSearcher` follows the promotions live."""
