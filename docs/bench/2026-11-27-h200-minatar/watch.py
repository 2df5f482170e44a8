"""The MinAtar bar on one leased GPU: Breakout and Space Invaders, 5 DQN seeds x 5M frames each.

The two presets run as two ``climit teach`` processes sharing the GPU (each learner is a chain
of 5M small sequential steps, so the GPU is mostly idle between one process's kernels). They
are started in their own process sessions so that they outlive the device tool's 10-minute
command limit; this script is called twice, in the repository root on the device machine:

    python3 watch.py launch UNTIL_S [GAME ...]    # start them (bo, si; default both), watch
                                                 # until UNTIL_S after launch
    python3 watch.py collect LIMIT_S             # watch on, at most LIMIT_S more, then summarise

With both games, Breakout comes first: whenever its projected finish (at its rate over the last
minute, once 30 s of it are seen) is later than GUARD_S after launch, Space Invaders is stopped
(SIGTERM: it saves and exits), so that one game surely finishes within the lease. On the H200
of 2026-11-27 two processes together made no more env steps than one alone (commands.txt), so
one game per lease is the plan: ``launch 545 si``. ``collect`` writes, per game, summary.json and
metrics.jsonl as climit wrote them, episodes.npz (every training episode's return and length
per learner, from the histories) and analysis.json (per learner: return per fifth of the frames (a million at 5M),
mean and s.d. of the last 100 training episodes; greedy return from the summary).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STATE = Path("/tmp/minatar")
GAMES = {"bo": ("configs/teacher_breakout.yaml", "bo5"),
         "si": ("configs/teacher_spaceinvaders.yaml", "si5")}
EXTRA = os.environ.get("EXTRA", "").split()  # overrides for a trial run (tiny, on a CPU)
TOTAL = int(os.environ.get("TOTAL", 5_000_000))
GUARD_S = float(os.environ.get("GUARD_S", 690))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def launch(games: list[str]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION="0.4")
    pids = {}
    for game in games:
        config, name = GAMES[game]
        with open(STATE / f"{game}.log", "wb") as out:
            p = subprocess.Popen([sys.executable, "-m", "climit", "teach", "--config", config,
                                  f"run.name={name}", *EXTRA], stdout=out, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
        pids[game] = p.pid
    (STATE / "state.json").write_text(json.dumps({"t0": time.time(), "pids": pids}))
    log(f"launched {pids}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of this process that exited is a zombie until reaped: treat it as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def progress(name: str) -> list[tuple[float, int]]:
    """(file time, env steps per learner) of each metrics line of run NAME, appended as read."""
    path = Path("runs") / name / "teacher" / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [(r.get("wall_s", 0.0), int(r["step"])) for r in rows if "step" in r]


class Rate:
    """Env steps per learner per second over about the last minute, from polled step counts."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []

    def add(self, step: int) -> None:
        if not self.seen or step != self.seen[-1][1]:
            self.seen.append((time.time(), step))

    def value(self) -> float | None:
        now = time.time()
        window = [s for s in self.seen if now - s[0] <= 60] or self.seen[-1:]
        if len(window) < 2 or window[-1][0] - window[0][0] < 30:
            return None
        return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])


def watch(until: float, state: dict) -> None:
    t0, pids = state["t0"], state["pids"]
    rates = {g: Rate() for g in pids}
    done = {g: False for g in pids}
    last_print = 0.0
    while time.time() < until and not all(done.values()):
        for game in pids:
            rows = progress(GAMES[game][1])
            if rows:
                rates[game].add(rows[-1][1])
            done[game] = not alive(pids[game])
        both = len(pids) == 2
        bo_rate = rates["bo"].value() if both else None
        bo_step = (rates["bo"].seen or [(0, 0)])[-1][1] if both else 0
        if bo_rate and alive(pids["si"]) and not done["bo"]:
            finish = time.time() - t0 + (TOTAL - bo_step) / bo_rate
            stopped = STATE / "si_stopped"
            if finish > GUARD_S and not stopped.exists():
                log(f"Breakout projected at {finish:.0f} s > {GUARD_S:.0f} s: stopping Space Invaders")
                os.kill(pids["si"], signal.SIGTERM)
                stopped.touch()
        if time.time() - last_print >= 30:
            last_print = time.time()
            parts = []
            for game in pids:
                step = (rates[game].seen or [(0, 0)])[-1][1]
                r = rates[game].value()
                parts.append(f"{game} {step / 1e6:.2f}M {'' if r is None else f'{r:,.0f}/s'}"
                             f"{' done' if done[game] else ''}")
            log(f"t={time.time() - t0:.0f}s " + " | ".join(parts))
        time.sleep(2)


def per_million(ep_end: np.ndarray, ret: np.ndarray) -> list[float | None]:
    out = []
    span = max(TOTAL // 5, 1)
    for m in range(5):
        sel = (ep_end > m * span) & (ep_end <= (m + 1) * span)
        out.append(float(ret[sel].mean()) if sel.any() else None)
    return out


def analyse(game: str, out: Path) -> dict:
    from climit import histories

    name = GAMES[game][1]
    run = Path("runs") / name / "teacher"
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    h = histories.open(run / "histories")
    learners, arrays = [], {}
    for i in range(h.num_streams):
        ep = h.episodes(i)
        ret, end = ep.ret[ep.finished], (ep.start + ep.length)[ep.finished]
        arrays[f"ret_{i}"] = ret.astype(np.float32)
        arrays[f"length_{i}"] = ep.length[ep.finished].astype(np.int32)
        last = ret[-100:]
        learners.append({"episodes": int(ret.size), "per_million": per_million(end, ret),
                         "last100_mean": float(last.mean()), "last100_sd": float(last.std())})
    np.savez_compressed(out / f"{game}_episodes.npz", **arrays)
    last = np.array([x["last100_mean"] for x in learners])
    greedy = summary.get("final_return_per_learner")
    return {"game": h.env["name"], "steps": h.num_steps, "complete": h.complete,
            "last100_mean_over_learners": float(last.mean()),
            "last100_sd_over_learners": float(last.std(ddof=1)) if last.size > 1 else None,
            "greedy_per_learner": greedy,
            "greedy_mean": summary.get("final_return_mean"),
            "env_steps_per_s": summary.get("env_steps_per_s"),
            "train_wall_s": summary.get("train_wall_s"), "learners": learners}


def collect(out: Path, games: list[str]) -> None:
    result = {}
    for game in games:
        name = GAMES[game][1]
        run = Path("runs") / name / "teacher"
        for f in ("summary.json", "metrics.jsonl"):
            if (run / f).exists():
                shutil.copy(run / f, out / f"{game}_{f}")
        try:
            result[game] = analyse(game, out)
        except Exception as e:  # a partial run: report what failed, keep the other game
            result[game] = {"error": repr(e)}
        log(f"{game}: {json.dumps({k: v for k, v in result[game].items() if k != 'learners'})}")
    (out / "analysis.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    phase, seconds = sys.argv[1], float(sys.argv[2])
    out = Path(os.environ.get("OUT", STATE / "out"))
    out.mkdir(parents=True, exist_ok=True)
    if phase == "launch":
        launch(sys.argv[3:] or list(GAMES))
    state = json.loads((STATE / "state.json").read_text())
    until = state["t0"] + seconds if phase == "launch" else time.time() + seconds
    watch(until, state)
    logs = "".join(f"===== {g}\n" + (STATE / f"{g}.log").read_text(errors="replace")[-6000:]
                   for g in state["pids"])
    (out / "logs.txt").write_text(logs.replace("\r", "\n"))
    if phase == "collect":
        collect(out, list(state["pids"]))


if __name__ == "__main__":
    main()
