"""Click simulation: any BEIR folder plus a logging ranking in, UBI 1.3 logs and hidden truth out.

The model (all parameters in `SimulatorConfig`, params section `simulate`):

- Traffic: each day has `sessions_per_day` sessions. A session belongs to a user drawn
  uniformly from a pool of `n_users` (a stable client id each; logged-in users also carry a
  user id) and has a device drawn from `device_share`. It issues 1 + Poisson(λ) queries
  (capped), each drawn from the split's queries with Zipf popularity.
- Pages: the logging ranker's top `top_k` for the query. On a share of queries an exploration
  scheme reorders the top n (`swap_pairs` or `shuffle_top_n`); each query records the
  scheme, the pre-exploration `logging_ranks` and the `display_propensities`.
- Grades: BEIR scores map to 0-4 by `round(4 * score / max_score)`; unjudged results are 0.
- Clicks, position-based model (`pbm`, default): a result at position k is examined with
  probability θ_k = examination[k] ** eta (the curve's last value beyond its end; a device
  may have its own eta) and an examined result is clicked with `click_prob_by_grade[grade]`.
  Cascade model (`cascade`): the user scans top-down, clicks a result with its click
  probability and stops at the first click; position k is examined with probability
  prod_{j<k} (1 - click_prob_j).
- Loves: a click on a result is followed by a love with `love_prob_by_grade[grade]`; a love
  never happens without a click on the same result.
- User kinds: `normal` users as above; `noisy` ones click examined results at a fixed rate
  whatever their relevance; `adversarial` ones click and love by a reversed grade table.
- Logs: per day `YYYY-MM-DD/queries.jsonl.gz` and `events.jsonl.gz` (an `impression` per
  shown result, `click`, `love`), timestamps inside the day (UTC, `Z`). The truth
  (`config.json`, `results.parquet`: examination, click probabilities, user kind per shown
  result) goes to a separate folder, for evaluation only.
"""

from clickloop.simulation.click_models import examination_curve, relevance_grades
from clickloop.simulation.config import ExplorationConfig, SimulatorConfig, TimingConfig
from clickloop.simulation.simulator import SimulatedDay, Simulator
from clickloop.simulation.ubi_logs import event_records, query_records, truth_table, write_simulation

__all__ = [
    "ExplorationConfig",
    "SimulatedDay",
    "Simulator",
    "SimulatorConfig",
    "TimingConfig",
    "event_records",
    "examination_curve",
    "query_records",
    "relevance_grades",
    "truth_table",
    "write_simulation",
]
