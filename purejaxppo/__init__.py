"""purejaxppo: PPO end to end in JAX, vmapped over seeds and hyperparameters.

The trainer lives in one forkable file, `purejaxppo/ppo.py`; everything else is a thin layer.
"""

from purejaxppo.ppo import (
    Config,
    HParams,
    compute_gae,
    evaluate,
    final_return,
    make_train,
    make_trainer,
    policy_loss,
    use_cpu_cores,
    value_loss,
)

__all__ = [
    "Config",
    "HParams",
    "compute_gae",
    "evaluate",
    "final_return",
    "make_train",
    "make_trainer",
    "policy_loss",
    "use_cpu_cores",
    "value_loss",
]
__version__ = "0.1.0"
