"""Gin names for plain functions: the entry points' way in, without gin in the library.

:func:`expose` gives a gin name to the keyword arguments of a plain function (e.g.
``make_schedule.warmup_steps`` for :func:`jaxlab.optim.schedules.make_schedule`). Binding
the name checks each parameter against the function's signature at parse time;
:func:`collect` at the entry point returns the values gin binds (the function's own
defaults stay in the function), which the entry point passes on explicitly. The function
itself never reads gin.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gin

_COLLECTORS: dict[str, Callable[..., dict]] = {}


def expose(name: str, fn: Callable, skip: tuple[str, ...] = ()) -> None:
    """Registers gin name ``name`` for ``fn``'s parameters, less ``skip`` and ``*args``/
    ``**kwargs``. A parameter without a default must be bound (:func:`collect` says so)."""
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for p in inspect.signature(fn).parameters.values()
              if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    required = [p.name for p in params if p.default is p.empty]
    # gin calls the collector with the bound values only; the signature (with the
    # function's defaults) is what gin checks bindings against and records
    sig = inspect.Signature([p.replace(default=None) if p.default is p.empty else p
                             for p in params])

    def collector(**kwargs) -> dict[str, Any]:
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise ValueError(f"{name}.{missing[0]} must be set (a gin binding "
                             f"`{name}.{missing[0]} = ...`); it has no default")
        return kwargs

    collector.__signature__ = sig
    collector.__name__ = collector.__qualname__ = name
    collector.__module__ = fn.__module__
    collector.__doc__ = f"The gin-bound keyword arguments of {fn.__module__}.{fn.__name__}."
    _COLLECTORS[name] = gin.external_configurable(collector, name)


def collect(name: str) -> dict[str, Any]:
    """The values gin binds for ``name`` now (only those bound). Recorded in the
    operative config like any configurable call."""
    return _COLLECTORS[name]()


def exposed(name: str) -> bool:
    return name in _COLLECTORS
