"""MinAtar learning curves of the DQN seeds from GAME_episodes.npz (written by watch.py).

    python docs/bench/2026-11-27-h200-minatar/plot.py [bo|si] [FOLDER]

draws breakout.png (spaceinvaders.png) in FOLDER (default: this one) from FOLDER/GAME_episodes.npz.

Each curve is one learner's training-episode return (epsilon 0.1 after the first 105k frames),
averaged over 100k-frame windows by the frame at which an episode ends.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).parent
WINDOW = 100_000
FRAMES = 5_000_000
# game: (title, file, the MinAtar paper's DQN return at 5M frames)
GAMES = {"bo": ("Breakout", "breakout.png", 10), "si": ("Space Invaders", "spaceinvaders.png", 43)}


def curve(ret_E: np.ndarray, length_E: np.ndarray) -> np.ndarray:
    """Mean return per window: [FRAMES // WINDOW], episodes binned by their last frame."""
    window_E = (np.cumsum(length_E) - 1) // WINDOW
    sums = np.bincount(window_E, weights=ret_E, minlength=FRAMES // WINDOW)
    counts = np.bincount(window_E, minlength=FRAMES // WINDOW)
    return sums[:FRAMES // WINDOW] / np.maximum(counts[:FRAMES // WINDOW], 1)


def main(game: str, folder: Path) -> None:
    title, png, paper = GAMES[game]
    data = np.load(folder / f"{game}_episodes.npz")
    learners = sorted(int(k.split("_")[1]) for k in data.files if k.startswith("ret_"))
    x = (np.arange(FRAMES // WINDOW) + 1) * WINDOW / 1e6
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i in learners:
        ax.plot(x, curve(data[f"ret_{i}"], data[f"length_{i}"]), lw=1, label=f"seed {i}")
    ax.axhline(paper, color="k", ls="--", lw=1, label=f"MinAtar paper's DQN, ≈ {paper}")
    ax.set(xlabel="frames (millions)", ylabel="training-episode return (ε = 0.1)",
           title=f"MinAtar {title}, DQN, 5M frames, one H200")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / png, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bo", Path(sys.argv[2]) if len(sys.argv) > 2 else HERE)
