"""IC-Cache: past large-model answers as in-context examples for a small model.

Pieces, one concept each (none imports HTTP libraries):

* :mod:`.config`    models and roles, per-category selection, router settings;
* :mod:`.bank`      the example bank (scope x category partitions, utility stats);
* :mod:`.selection` two-stage selection under a token budget;
* :mod:`.prompt`    examples as earlier turns after the system prompt;
* :mod:`.load`      engine load model fed by a metrics scraper;
* :mod:`.bandit`    LinUCB; :mod:`.router` the per-request decision;
* :mod:`.quality`   shadow agreement and per-category counters;
* :mod:`.replay`    offline re-validation and utility-per-byte eviction.
* :mod:`.persist`   the bank from a cache store, and its changes written back.
"""

from semcache.iccache.bank import Example, ExampleBank, approx_tokens, scope_of
from semcache.iccache.config import ICCacheConfig, ModelSpec, RouterConfig, SelectionConfig, load_iccache_config
from semcache.load import EngineLoad, EngineMetrics, LoadTracker
from semcache.iccache.persist import load_bank, save_bank
from semcache.iccache.prompt import with_examples
from semcache.iccache.quality import ICStats, agreement
from semcache.iccache.replay import ReplayConfig, ReplayReport, replay_examples
from semcache.iccache.router import Decision, ICCacheRouter
from semcache.iccache.selection import Selection, select_examples, token_budget

__all__ = [
    "Decision", "EngineLoad", "EngineMetrics", "Example", "ExampleBank", "ICCacheConfig", "ICCacheRouter",
    "ICStats", "LoadTracker", "ModelSpec", "ReplayConfig", "ReplayReport", "RouterConfig", "Selection",
    "SelectionConfig", "agreement", "approx_tokens", "replay_examples", "scope_of", "select_examples",
    "load_bank", "load_iccache_config", "save_bank", "token_budget", "with_examples",
]
