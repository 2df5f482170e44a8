"""``climit bench teacher``: aggregate env steps/s and TD updates/s of S vmapped learners.

The default case is the rejax peer's tuned CartPole-v1 DQN (``../shared/anchors/
rejax_dqn_bench.py``): 10 envs, 5 TD updates per vector step, batch 100, 64-64 swish dueling
Double DQN, buffer 50k, 5k steps before learning, Polyak 0.02, lr 1e-3, squared loss, 100k env
steps per learner. Compilation is timed apart; each learner count runs without histories
(``record="stats"``: only per-learner summaries leave the device) and/or with histories written
to a temporary directory through :mod:`climit.histories` (every transition plus Q-values every
100 vector steps), exactly as ``climit teach`` writes them. The peer runs in a subprocess of the
same command (same machine, same moment) and a ratio line follows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from climit import config as config_lib
from climit import envs, histories
from climit.teacher import dqn, train

# rejax configs/gymnax/cartpole.yaml (dqn), translated to climit keys. Two differences, both
# small next to the TD updates: rejax moves its target 2% of the way once per vector step (after
# the 5 updates), climit after every update (4 more elementwise passes over ~5k parameters a
# vector step); rejax's epsilon decays over half of its run, climit's over 50k env steps.
REJAX_CARTPOLE = (
    "env.name=CartPole-v1", "env.train_tasks=1", "env.transfer=",
    "teacher.num_envs=10", "teacher.updates_per_train=5", "teacher.train_every=1",
    "teacher.batch_size=100", "teacher.hidden=[64, 64]", "teacher.dueling=true",
    "teacher.double=true",
    "teacher.activation=swish", "teacher.buffer_size=50000", "teacher.learning_starts=5000",
    "teacher.target=polyak", "teacher.tau=0.02", "teacher.lr=0.001", "teacher.gamma=0.99",
    "teacher.eps_end=0.05", "teacher.eps_decay_steps=50000", "teacher.max_grad_norm=10",
    "teacher.loss=mse", "teacher.chunk_steps=1000", "teacher.q_log_period=100",
)


def default_peer_script() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "anchors" / "rejax_dqn_bench.py"


def bench_config(steps: int,
                 overrides: tuple[str, ...] | list[str] = ()) -> config_lib.ExperimentConfig:
    """The peer's CartPole config with ``steps`` env steps per learner, then ``overrides``.

    Raises:
        ConfigError: an invalid config. When ``steps`` does not exceed the peer config's
            ``learning_starts`` (the user set neither key directly), the message is about
            ``--steps`` and says what to pass instead.
    """
    try:
        return config_lib.load(None, list(REJAX_CARTPOLE) + [f"teacher.total_env_steps={steps}"]
                               + list(overrides))
    except config_lib.ConfigError as e:
        hint = _steps_hint(e, steps, overrides)
        if hint is None:
            raise
        raise config_lib.ConfigError("", hint) from e


def _setting(key: str, settings: tuple[str, ...] | list[str]) -> str | None:
    """The value the last of ``settings`` (``key=value`` strings) gives ``key``, if any."""
    values = [s.split("=", 1)[1] for s in settings if s.split("=", 1)[0].strip() == key]
    return values[-1] if values else None


def _steps_hint(err: config_lib.ConfigError, steps: int,
                overrides: tuple[str, ...] | list[str]) -> str | None:
    """The ``--steps`` version of ``err`` when it comes from ``--steps`` meeting the peer
    config's ``learning_starts`` (the user only passed --steps, so the config key alone would
    not tell them what to change); None for any other error."""
    mine = any(_setting(k, overrides) is not None
               for k in ("teacher.learning_starts", "teacher.total_env_steps"))
    if err.key != "teacher.learning_starts" or mine:
        return None
    starts = _setting("teacher.learning_starts", REJAX_CARTPOLE)
    return (f"--steps {steps} must exceed the peer config's teacher.learning_starts {starts} (no "
            f"TD update happens before it): pass a larger --steps, or teacher.learning_starts=N "
            f"with N below {steps}")


def machine() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": getattr(dev, "device_kind", str(dev)),
            "n_devices": jax.device_count(), "host_cpus": os.cpu_count(),
            "jax_version": jax.__version__}


def _timed_wait(appender: train.BackgroundAppend | None) -> float:
    """Seconds spent waiting for the appender's last write (0 without one)."""
    start = time.perf_counter()
    if appender is not None:
        appender.wait()
    return time.perf_counter() - start


def measure(cfg: config_lib.ExperimentConfig, learners: int, write_histories: bool,
            seed: int = 0) -> dict[str, Any]:
    """One measurement: S learners for ``teacher.total_env_steps`` each."""
    tcfg = cfg.teacher
    env = envs.make(cfg.env.name, cfg.env.sticky_action_prob)
    tasks = jnp.asarray(envs.sample_tasks(cfg.env.name, jax.random.PRNGKey(seed), learners,
                                          "train"))
    keys = dqn.learner_keys(jax.random.PRNGKey(seed), 1, learners)
    hp = dqn.hparams(tcfg, learners)
    state, hp, tasks = train.place(dqn.init(tcfg, env, keys, tasks), hp, tasks)
    state = jax.block_until_ready(state)
    q_period = tcfg.q_log_period
    with tempfile.TemporaryDirectory(prefix="climit-bench-") as tmp:
        hooks, writer, appender = train._Hooks(), None, None
        if write_histories:  # as `climit teach` writes them: on a background thread
            infos = [histories.StreamInfo(g, e, tuple(np.asarray(tasks[g]).tolist()), g)
                     for g in range(learners) for e in range(tcfg.num_envs)]
            writer = histories.create(Path(tmp) / "histories", spec=env.spec, streams=infos,
                                      q_period=q_period,
                                      total_steps=tcfg.total_env_steps // tcfg.num_envs)
            appender = train.BackgroundAppend(writer)
            hooks.output = lambda out, t0, t1: appender.append(out)
        record = "full" if write_histories else "stats"
        # The writer releases its compression threads however the loop ends; the appender first
        # waits for the last chunk's write, which is timed with the run.
        with writer or contextlib.nullcontext(), appender or contextlib.nullcontext():
            state, timing = train._run_chunks(tcfg, env, state, hp, tasks, record=record,
                                              q_period=q_period if write_histories else 0,
                                              hooks=hooks)
            timing.run_s += _timed_wait(appender)
        disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    final = train.evaluate_greedy(tcfg, env, state.learners.params, tasks,
                                  jax.random.PRNGKey(seed + 1), episodes=10)
    return {
        "bench": "climit_teacher", "env": cfg.env.name, "num_learners": learners,
        "histories": write_histories, "env_steps_per_learner": tcfg.total_env_steps,
        "td_updates_per_learner": int(state.updates),
        "compile_s": round(timing.compile_s, 3), "train_s": round(timing.run_s, 3),
        "env_steps_per_s": round(timing.env_steps / timing.run_s, 1),
        "td_updates_per_s": round(timing.td_updates / timing.run_s, 1),
        "histories_bytes_on_disk": disk if write_histories else 0,
        "final_return_mean": round(float(final.mean()), 2),
        **machine(),
    }


def run_peer(script: Path, learners: list[int], steps: int, sampler: str) -> list[dict[str, Any]]:
    """The rejax peer in a subprocess (one JSON line per learner count)."""
    script = script.resolve()  # it runs from its own folder, so a relative path would break
    if not script.is_file():
        return [{"bench": "rejax_dqn", "sampler": sampler,
                 "error": f"peer script not found: {script}"}]
    # rejax runs whole blocks of eval_freq env steps (2500 in its CartPole config): one block of
    # ``steps`` makes it run exactly as many as climit (6000 ran 7500 without).
    cmd = [sys.executable, str(script), "--eval-mode", "none", "--sampler", sampler,
           "--total-timesteps", str(steps), "--eval-freq", str(steps), "--final-eval-episodes",
           "10", "--force-vmap", "--num-seeds", *map(str, learners)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=script.parent)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return [{"bench": "rejax_dqn", "sampler": sampler, "error": f"peer failed: {tail}"}]
    out = []
    for line in proc.stdout.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        keep = ("num_seeds", "sampler", "compile_s", "train_s", "env_steps_total",
                "grad_updates_total", "env_steps_per_s", "grad_updates_per_s", "final_return_mean")
        out.append({"bench": "rejax_dqn", **{k: rec.get(k) for k in keep}})
    return out


def run(learners: list[int], steps: int, *, histories: str = "both", peer: str = "uniform",
        peer_script: str | None = None,
        overrides: list[str] | tuple[str, ...] = ()) -> Iterator[dict]:
    """Yield one record per (learner count, histories on/off), then the peer's and ratios."""
    cfg = bench_config(steps, overrides)
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[histories]
    ours: dict[int, dict] = {}
    for s, write in itertools.product(learners, modes):
        rec = measure(cfg, s, write)
        if not write:  # the peer writes no histories: compare with the run that writes none
            ours[s] = rec
        yield rec
    samplers = {"none": (), "uniform": ("uniform",), "rejax": ("rejax",),
                "both": ("uniform", "rejax")}[peer]
    script = Path(peer_script) if peer_script else default_peer_script()
    for sampler in samplers:
        for rec in run_peer(script, learners, steps, sampler):
            yield rec
            yield from _ratio(ours.get(rec.get("num_seeds")), rec, sampler)


def _ratio(mine: dict | None, peer: dict, sampler: str) -> Iterator[dict]:
    """The climit/peer ratio line for one peer record (none when either side is missing; an
    error line when the two ran different env steps per learner). ``climit_devices``: climit
    spreads its learners over every device, the peer runs on one."""
    if not (mine and peer.get("env_steps_per_s")):
        return
    line = {"bench": "ratio_climit_over_peer", "sampler": sampler,
            "num_learners": peer["num_seeds"], "climit_devices": mine.get("n_devices")}
    peer_steps = (peer.get("env_steps_total") or 0) / max(peer["num_seeds"], 1)
    if peer_steps != mine["env_steps_per_learner"]:
        yield {**line, "error": f"the peer ran {peer_steps:g} env steps per learner, climit "
                                f"{mine['env_steps_per_learner']}: not compared"}
        return
    yield {**line, "env_steps_per_s": round(mine["env_steps_per_s"] / peer["env_steps_per_s"], 3),
           "td_updates_per_s": round(mine["td_updates_per_s"] / peer["grad_updates_per_s"], 3)}
