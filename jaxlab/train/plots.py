"""Loss curves of one run as a PNG (train loss per logged step, validation loss points)."""

from __future__ import annotations

from pathlib import Path

from jaxlab.train.metrics import read_metrics


def plot_loss_curves(workdir: str | Path, out: str | Path | None = None) -> Path:
    """Writes ``workdir/loss.png`` (or ``out``): train and validation loss vs tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workdir = Path(workdir)
    records = read_metrics(workdir / "metrics.jsonl")
    if not records:
        raise FileNotFoundError(f"no metrics in {workdir / 'metrics.jsonl'}")
    train = [(r["tokens"], r["train_loss"]) for r in records if isinstance(r.get("train_loss"), float)]
    val = [(r["tokens"], r["val_loss"]) for r in records if isinstance(r.get("val_loss"), float)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", ms=4)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(workdir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out) if out else workdir / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out
