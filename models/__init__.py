"""The learning code of clickloop: feedback models (position-bias propensities, unbiased
relevance labels, ordinal and reward models), retrievers and the query policy."""

import logging
import warnings

# Every Lightning Trainer announces the hardware ("GPU available: False, used: False", ...) and
# advertises Lightning's cloud services ("💡 Tip: ... litlogger") through this INFO channel; the
# stages report through their metrics instead. Lightning's warnings go through `warnings` and stay,
# but for one: its own pytree helper uses a torch API that torch deprecates, which no user can change.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    module=r"lightning\.pytorch\.utilities\._pytree",
)
