"""``make demo``: train a small model on the built-in corpus and plot its loss curves.

    python -m jaxlab.demo [--workdir runs/demo]

About two minutes on 2 CPU cores (d=128, 2 layers, 600 steps of 16 x 128 bytes).
"""

from __future__ import annotations

import argparse
import json

from jaxlab.train.gin_setup import parse_gin


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", default="runs/demo")
    a = p.parse_args()
    from jaxlab.train.loop import train
    from jaxlab.train.plots import plot_loss_curves

    parse_gin(["jaxlab/configs/models/d128.gin", "jaxlab/configs/train/cpu_smoke.gin"],
              ["TrainConfig.steps = 600"])
    summary = train(a.workdir)
    png = plot_loss_curves(a.workdir)
    print(json.dumps({k: summary[k] for k in ("status", "final_train_loss", "final_val_loss",
                                              "tokens_seen", "wall_time_s")}, indent=1))
    print(f"run directory: {a.workdir}\nloss curves:   {png}")


if __name__ == "__main__":
    main()
