"""The loss curves of a run (loss.png)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_history(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    loss = np.array(history["loss"])
    window = max(1, len(loss) // 50)
    ax.plot(history["step"], loss, alpha=0.25, color="tab:blue", label="loss (per step)")
    ax.plot(
        history["step"][window - 1 :],
        np.convolve(loss, np.ones(window) / window, "valid"),
        color="tab:blue",
        label=f"loss ({window}-step mean)",
    )
    for key, colour, label in (
        ("scene_loss", "tab:orange", "scene-probe"),
        ("token_loss", "tab:red", "token-probe"),
        ("mention_loss", "tab:purple", "mention-probe"),
        ("places_loss", "tab:brown", "places-probe"),
    ):
        aux = np.array(history.get(key, []))
        if aux.size and aux.any():
            ax.plot(
                history["step"][window - 1 :],
                np.convolve(aux, np.ones(window) / window, "valid"),
                color=colour,
                label=f"{label} loss ({window}-step mean)",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("answer cross-entropy / probe losses")
    ax.set_yscale("log")
    if history["eval_step"]:
        acc = ax.twinx()
        acc.plot(
            history["eval_step"],
            history["eval_yes_no"],
            "o-",
            color="tab:green",
            label="held-out yes/no acc",
        )
        acc.set_ylim(0.4, 1.0)
        acc.set_ylabel("held-out yes/no accuracy")
        acc.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title("cobra-train: small Cobra on synthetic Language-Table scenes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
