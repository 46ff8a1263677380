"""Sweeps: gin-style sweep files expanded into runs, launched locally or on Ray, with
their results in one SQLite store per sweep.

    python -m jaxlab.launch --sweep experiments/muon_vs_adamw/sweep.gin --preset smoke

Modules: ``spec`` (the sweep-file dialect and its parser), ``derive`` (derived-binding
expressions), ``expand`` (runs, hashes, gin checks), ``store`` (SQLite results),
``job`` and ``child`` (one training subprocess), ``backends`` (local, ray), ``runner``
(skip / resume / record), ``status``, ``report``, ``table``. From Python::

    from jaxlab.launch.expand import load_plan
    from jaxlab.launch.runner import launch
    plan = load_plan("experiments/muon_vs_adamw/sweep.gin", "smoke")
    launch(plan, "local", workers=2)
"""
