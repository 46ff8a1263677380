"""A toy optimizer in its own module, as a user would add one: sign descent with momentum.

Imported by ``tests/train/test_optimizer.py`` through ``--gin_bindings "import
toy_optimizer"``; registering is the whole integration.
"""

import optax

from jaxlab.train.optimizer import register


@register("toy_sign_descent")
def toy_sign_descent(infos, lr, make_lr, momentum: float = 0.9):
    """``W <- W - lr sign(EMA_momentum(g))`` on every leaf."""
    del infos, make_lr
    return optax.chain(optax.trace(momentum), optax.scale_by_sign(),
                       optax.scale_by_learning_rate(lr))
