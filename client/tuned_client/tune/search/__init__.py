"""Search spaces and variant generation, under Ray Tune's names."""

from tuned_client.tune.search.basic_variant import BasicVariantGenerator
from tuned_client.tune.search.concurrency_limiter import ConcurrencyLimiter
from tuned_client.tune.search.repeater import Repeater
from tuned_client.tune.search.sample import (
    Categorical,
    Domain,
    Float,
    Function,
    Integer,
    choice,
    grid_search,
    lograndint,
    loguniform,
    qlograndint,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    uniform,
)
from tuned_client.tune.search.searcher import Searcher, restore_searcher, save_searcher
from tuned_client.tune.search.variant_generator import (
    AttrDict,
    count_variants,
    format_vars,
    generate_variants,
    make_spec,
)

__all__ = [
    "AttrDict",
    "BasicVariantGenerator",
    "Categorical",
    "ConcurrencyLimiter",
    "Domain",
    "Float",
    "Function",
    "Integer",
    "Repeater",
    "Searcher",
    "choice",
    "count_variants",
    "format_vars",
    "generate_variants",
    "grid_search",
    "lograndint",
    "loguniform",
    "make_spec",
    "qlograndint",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "restore_searcher",
    "sample_from",
    "save_searcher",
    "uniform",
]
