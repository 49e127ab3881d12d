"""The simulator's configuration: params.yaml section `simulate`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Common settings in the unbiased-learning-to-rank literature (ULTRA toolkit).
ULTRA_EXAMINATION = (0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06)
ULTRA_CLICK_PROB_BY_GRADE = (0.10, 0.16, 0.28, 0.52, 1.00)

MAX_GRADE = 4
CLICK_MODELS = ("pbm", "cascade")
EXPLORATION_SCHEMES = ("none", "swap_pairs", "shuffle_top_n")
USER_KINDS = ("normal", "noisy", "adversarial")


@dataclass
class ExplorationConfig:
    """Randomized result lists on a share of the queries (makes position bias identifiable).

    - `swap_pairs`: within the top `n`, each adjacent pair (1,2), (3,4), ... is swapped
      independently with probability 1/2 (Joachims et al.'s swap intervention, all pairs at once).
    - `shuffle_top_n`: the top `n` are shown in a uniformly random order (RandTop-n).
    """

    scheme: str = "shuffle_top_n"
    share: float = 0.1
    n: int = 10


@dataclass
class TimingConfig:
    """How simulated time passes inside a session (all timestamps stay inside their day)."""

    # From the query to the impression events (the page renders).
    impression_delay_ms: int = 300
    # Mean of the exponential wait before each click, scanning the page top-down, and from a click to its love.
    action_delay_mean_s: float = 8.0
    # Mean of the exponential pause between the last action on one result page and the next query.
    query_gap_mean_s: float = 40.0


@dataclass
class SimulatorConfig:
    """params.yaml section `simulate`. See `clickloop.simulation` for the click models."""

    # On for the embedded default and benchmarks; off in production, where the simulate stage writes
    # empty folders and every stage learns from the real logs (feedback_logs/) alone.
    enabled: bool = True
    days: int = 7
    start_date: str = "2025-01-06"
    sessions_per_day: int = 3000
    # Each session issues 1 query plus Poisson(extra_queries_per_session) more, at most max_queries_per_session.
    extra_queries_per_session: float = 0.5
    max_queries_per_session: int = 5
    # Query popularity: the r-th most popular query is issued with weight r ** -query_zipf_exponent
    # (the popularity order is a seeded permutation of the split's queries).
    query_zipf_exponent: float = 1.0
    top_k: int = 10
    click_model: str = "pbm"
    # Examination probability by rank 1..len (beyond it, the last value), raised to eta.
    examination: tuple[float, ...] = ULTRA_EXAMINATION
    eta: float = 1.0
    # Per-device eta overriding `eta`, e.g. {"mobile": 1.5}: a steeper examination curve on small screens.
    eta_by_device: dict[str, float] = field(default_factory=dict)
    click_prob_by_grade: tuple[float, ...] = ULTRA_CLICK_PROB_BY_GRADE
    love_prob_by_grade: tuple[float, ...] = (0.0, 0.0, 0.0, 0.15, 0.5)
    # Noisy users click examined results at a fixed rate whatever their relevance, and never love.
    noisy_user_share: float = 0.05
    noisy_click_prob: float = 0.2
    # Adversarial users prefer irrelevant results: click and love tables by grade, reversed.
    adversarial_user_share: float = 0.01
    adversarial_click_prob_by_grade: tuple[float, ...] = (1.0, 0.52, 0.28, 0.16, 0.10)
    adversarial_love_prob_by_grade: tuple[float, ...] = (0.5, 0.15, 0.0, 0.0, 0.0)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    device_share: dict[str, float] = field(default_factory=lambda: {"desktop": 0.6, "mobile": 0.4})
    # The user pool: each user has a stable client id and kind; logged-in ones also a user id.
    n_users: int = 2000
    logged_in_share: float = 0.6
    timing: TimingConfig = field(default_factory=TimingConfig)
    split: str = "train"
    ranker: str = "bm25"
    application: str = "clickloop-shop"
    dataset_dir: str = "data/dataset"
    bm25_dir: str = "data/indices/bm25"
    out_dir: str = "data/simulated_logs"
    truth_dir: str = "data/simulated_truth"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"simulate.enabled must be true or false, got {self.enabled!r}")
        # YAML reads an unquoted 2025-01-06 as a date.
        self.start_date = str(self.start_date)
        self.examination = tuple(float(v) for v in self.examination)
        for name in ("click_prob_by_grade", "love_prob_by_grade", "adversarial_click_prob_by_grade",
                     "adversarial_love_prob_by_grade"):
            table = tuple(float(v) for v in getattr(self, name))
            if len(table) != MAX_GRADE + 1:
                raise ValueError(f"simulate.{name} needs {MAX_GRADE + 1} values (grades 0-{MAX_GRADE}), got {table}")
            _check_probabilities(name, table)
            setattr(self, name, table)
        if not self.examination:
            raise ValueError("simulate.examination must not be empty")
        _check_probabilities("examination", self.examination)
        _check_probabilities("noisy_click_prob", (self.noisy_click_prob,))
        for name in ("noisy_user_share", "adversarial_user_share", "logged_in_share", "exploration.share"):
            _check_probabilities(name, (self._get(name),))
        if self.noisy_user_share + self.adversarial_user_share > 1:
            raise ValueError("simulate: noisy_user_share + adversarial_user_share must not exceed 1")
        if self.click_model not in CLICK_MODELS:
            raise ValueError(f"simulate.click_model must be one of {CLICK_MODELS}, got {self.click_model!r}")
        if self.exploration.scheme not in EXPLORATION_SCHEMES:
            raise ValueError(f"simulate.exploration.scheme must be one of {EXPLORATION_SCHEMES}, "
                             f"got {self.exploration.scheme!r}")
        if self.exploration.scheme != "none" and self.exploration.n < 2:
            raise ValueError(f"simulate.exploration.n must be >= 2 to randomize anything, got {self.exploration.n}")
        for name in ("days", "sessions_per_day", "top_k", "max_queries_per_session", "n_users"):
            if self._get(name) < 1:
                raise ValueError(f"simulate.{name} must be >= 1, got {self._get(name)}")
        if self.eta < 0 or any(v < 0 for v in self.eta_by_device.values()):
            raise ValueError("simulate: eta and eta_by_device values must be >= 0")
        if self.extra_queries_per_session < 0 or self.query_zipf_exponent < 0:
            raise ValueError("simulate: extra_queries_per_session and query_zipf_exponent must be >= 0")
        shares = self.device_share
        if not shares or any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-9:
            raise ValueError(f"simulate.device_share must be non-negative shares summing to 1, got {shares}")
        unknown_devices = sorted(set(self.eta_by_device) - set(shares))
        if unknown_devices:
            raise ValueError(f"simulate.eta_by_device names devices not in device_share: {unknown_devices}")
        self.start_day()  # fails early on a malformed date

    def start_day(self) -> dt.date:
        try:
            return dt.date.fromisoformat(self.start_date)
        except ValueError:
            raise ValueError(f"simulate.start_date must be YYYY-MM-DD, got {self.start_date!r}") from None

    def _get(self, dotted: str) -> float:
        value = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return value  # type: ignore[return-value]


def _check_probabilities(name: str, values: tuple[float, ...]) -> None:
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"simulate.{name}: probabilities must lie in [0, 1], got {values}")
