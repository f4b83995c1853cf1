"""Built-in metrics. Importing this package registers them (see :mod:`evalkit.metrics.base`).

Metrics are pure functions of extractor outputs (numpy arrays) and :mod:`evalkit.metrics.resampling`; they never
import adapters, extractors or the runner.
"""

from evalkit.metrics import (  # noqa: F401  (register)
    classification,
    clip_score,
    cmmd,
    control,
    dgm_set,
    fd_inf,
    frechet,
    inception_score,
    kid,
    lpips,
    memorisation,
    paired,
    prdc,
    scores,
    vendi,
)
from evalkit.metrics.base import (  # noqa: F401
    MetricDef,
    MetricInputs,
    MetricValue,
    available_metrics,
    get_metric,
    register_metric,
)
