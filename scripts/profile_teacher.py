"""Where the teacher's time goes: per-kernel device time of its steady-state chunk, beside a peer.

The tool that closed the one-learner gap to the rejax peer (README, "Teacher against the rejax
peer"); what remains of the teacher issue's speed targets is throughput at 512-4096 learners.

Every side starts past its buffer fill, then runs ``--steps`` env steps per learner per call:

- climit: the scheduled chunk that ``climit teach`` runs past learning_starts, ``record="stats"``
  (what ``climit bench teacher --histories off`` times), on the peer's CartPole config
  (``climit.teacher.bench``) plus any overrides; ``--variant NAME=key=value,key=value`` adds a
  side with more overrides (e.g. ``nodouble=teacher.double=false``);
- ``--peer-script PATH`` (rejax_dqn_bench.py of ../shared/anchors): rejax's DQN continued with
  ``algo.train(train_state=ts)``, no evaluation, ``--sampler`` uniform or rejax (shipped).

The sides are timed interleaved (``--repeats``, medians), then each runs once under
``jax.profiler``. ``OUT/profile.json`` holds, per side, env steps/s and TD updates/s, and the
device's kernels and the host's events by total time (name, count, microseconds): fusion names
are those of ``OUT/<side>.hlo.txt``, the side's optimized HLO. The files are few on purpose (a
lent GPU machine returns only a few per call).

Usage: ``python scripts/profile_teacher.py OUT [--learners 1] [--steps 2000] [--repeats 20]
[--variant ...] [--peer-script PATH] [--sampler uniform] [overrides ...]``; on CPU the profile
holds host events only.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from climit import envs
from climit.teacher import bench, dqn, train

# (step fn, state, env steps, TD updates) per call
Side = tuple[Callable[[Any], Any], Any, int, int]


def climit_side(learners: int, steps: int, overrides: list[str]) -> Side:
    """The scheduled chunk of ``steps`` env steps per learner, from a state past learning_starts."""
    cfg = bench.bench_config(max(30000, 2 * steps), overrides)
    tcfg = cfg.teacher
    env = envs.make(cfg.env.name, cfg.env.sticky_action_prob)
    tasks = jnp.asarray(envs.sample_tasks(cfg.env.name, jax.random.PRNGKey(0), learners, "train"))
    keys = dqn.learner_keys(jax.random.PRNGKey(0), 1, learners)
    state, hp, tasks = train.place(dqn.init(tcfg, env, keys, tasks), dqn.hparams(tcfg, learners),
                                   tasks)
    fill = -(-tcfg.learning_starts // tcfg.num_envs)
    state, _ = dqn.make_chunk(tcfg, env, fill, "stats")(state, hp, tasks)
    length = steps // tcfg.num_envs
    if not dqn.schedulable(tcfg, fill, length, "stats", 0):
        raise SystemExit(f"--steps {steps} with these overrides does not make a scheduled chunk "
                         f"(train_every {tcfg.train_every} must divide {length} vector steps, and "
                         f"one env, one step and one update per round never is: see "
                         f"dqn.schedulable)")
    fn = dqn.make_chunk(tcfg, env, length, "stats", 0, scheduled=True)
    rounds = length // tcfg.train_every
    return (lambda s: fn(s, hp, tasks)[0], state, learners * steps,
            learners * rounds * tcfg.updates_per_train)


def rejax_side(script: Path, learners: int, steps: int, sampler: str) -> Side:
    """rejax's DQN (its bench script's CartPole config, vmapped over seeds) past its fill."""
    sys.path.insert(0, str(script.resolve().parent))
    import rejax
    import rejax_dqn_bench as rb
    from rejax import buffers as rbuf
    if sampler == "uniform":
        rbuf.ReplayBuffer.sample = jax.jit(rb.uniform_sample, static_argnames=("num",))
    env, env_params = rb.make_env("CartPole-v1")
    base = dict(rb.CARTPOLE_CONFIGS["dqn"])
    fill = base["fill_buffer"] + base["num_envs"]  # train_iteration learns once past fill_buffer
    algo = rejax.get_algo("dqn").create(env=env, env_params=env_params,
                                        **dict(base, total_timesteps=fill, eval_freq=fill))
    algo = algo.replace(eval_callback=lambda a, ts, rng: jnp.zeros(()),
                        skip_initial_evaluation=True)
    ts, _ = jax.jit(jax.vmap(algo.train))(jax.random.split(jax.random.PRNGKey(0), learners))
    more = algo.replace(total_timesteps=steps, eval_freq=steps)
    fn = jax.jit(jax.vmap(lambda ts: more.train(train_state=ts)[0]))
    updates = steps // base["num_envs"] * base["num_epochs"]
    return fn, ts, learners * steps, learners * updates


def summarize(trace: dict, top: int = 60) -> dict:
    """Complete events of a Perfetto trace by name: count and total microseconds, device and
    host."""
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    total: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    count: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in trace["traceEvents"]:
        if e.get("ph") != "X":
            continue
        where = "device" if "/device:" in names.get(e["pid"], "") else "host"
        total[where][e["name"][:120]] += float(e.get("dur", 0))
        count[where][e["name"][:120]] += 1
    return {where: {"events": sum(count[where].values()), "busy_us": round(sum(t.values()), 1),
                    "top": [[n, count[where][n], round(us, 1)] for n, us in t.most_common(top)]}
            for where, t in total.items()}


def profile(fn: Callable[[Any], Any], state: Any) -> tuple[Any, dict]:
    """One call under the profiler: (new state, :func:`summarize` of its trace)."""
    with tempfile.TemporaryDirectory(prefix="climit-profile-") as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            state = jax.block_until_ready(fn(state))
        path = glob.glob(f"{logdir}/**/perfetto_trace.json.gz", recursive=True)[0]
        with gzip.open(path) as f:
            return state, summarize(json.load(f))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--learners", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2000, help="env steps per learner per call")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                    help="another climit side: NAME=key=value,key=value")
    ap.add_argument("--peer-script", type=Path, help="rejax_dqn_bench.py: add the rejax side")
    ap.add_argument("--sampler", choices=("uniform", "rejax"), default="uniform")
    ap.add_argument("overrides", nargs="*", help="config overrides for every climit side")
    a = ap.parse_intermixed_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    specs = {"climit": []}
    for v in a.variant:
        name, _, sets = v.partition("=")
        specs[f"climit_{name}"] = [s for s in sets.split(",") if s]
    sides: dict[str, Side] = {}
    for name, sets in specs.items():
        sides[name] = climit_side(a.learners, a.steps, list(a.overrides) + sets)
    if a.peer_script:
        sides[f"rejax_{a.sampler}"] = rejax_side(a.peer_script, a.learners, a.steps, a.sampler)
    states = {}
    for name, (fn, state, _, _) in sides.items():
        (a.out / f"{name}.hlo.txt").write_text(jax.jit(fn).lower(state).compile().as_text())
        states[name] = jax.block_until_ready(fn(state))  # compiles; learning goes on
    times = collections.defaultdict(list)
    for _ in range(a.repeats):
        for name, (fn, *_rest) in sides.items():
            t = time.perf_counter()
            states[name] = jax.block_until_ready(fn(states[name]))
            times[name].append(time.perf_counter() - t)
    report: dict[str, Any] = {"learners": a.learners, "steps_per_call": a.steps, **bench.machine()}
    for name, (fn, _, env_steps, updates) in sides.items():
        med = float(np.median(times[name]))
        states[name], prof = profile(fn, states[name])
        report[name] = {"median_s": round(med, 6), "env_steps_per_s": round(env_steps / med, 1),
                        "td_updates_per_s": round(updates / med, 1), **prof}
        print(json.dumps({"side": name, **{k: report[name][k] for k in
                                            ("median_s", "env_steps_per_s", "td_updates_per_s")}}),
              flush=True)
    (a.out / "profile.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
