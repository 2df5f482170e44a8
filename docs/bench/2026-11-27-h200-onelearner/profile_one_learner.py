"""One learner of climit's teacher against the rejax peer, steady state, one process.

Both sides start past their buffer fill (learning on), then run ``--steps`` more env steps per
call: climit as one jitted chunk of ``--steps / 10`` vector steps (``record="stats"``, what the
bench times), rejax as ``algo.train(train_state=ts)`` with the uniform sampler and no
evaluation, what its bench script times. The calls are interleaved ``--repeats`` times, then
each is run once under ``jax.profiler`` and its Perfetto trace is summed per kernel name (GPU)
and per host event name (OUT/profiles.json); ``--hlo`` names sides whose optimized HLO to write.

Ran at 052c897 (see commands.txt); its variants patch that commit's internals.

Usage: python profile_one_learner.py ANCHORS_DIR OUT_DIR [--steps 2000] [--repeats 20]
       [--variants base,...] (climit variants: base, unroll5, polyak_round, nocond, flatopt,
       nocond_flatopt: no lax.cond around the update round (every step of the chunk trains),
       the optimizer on the raveled parameters (optax.flatten), both)
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from climit import envs
from climit.teacher import bench, dqn


def climit_fn(steps: int, variant: str):
    """(jitted chunk, state past learning_starts, hp, tasks) for one learner."""
    extra = ["teacher.scan_unroll=5"] if variant == "unroll5" else []
    cfg = bench.bench_config(30000, extra)
    tcfg = cfg.teacher
    env = envs.make(cfg.env.name, cfg.env.sticky_action_prob)
    tasks = jnp.asarray(envs.sample_tasks(cfg.env.name, jax.random.PRNGKey(0), 1, "train"))
    hp = dqn.hparams(tcfg, 1)
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(0), 1, 1), tasks)
    fill = jax.jit(functools.partial(dqn.chunk, tcfg, env, 600, "stats", 0))
    state, _ = fill(state, hp, tasks)  # 6000 env steps: past learning_starts 5000
    body = functools.partial(dqn.chunk, tcfg, env, steps // tcfg.num_envs, "stats", 0)
    if variant == "polyak_round":
        body = polyak_once_per_round(body)
    if "nocond" in variant:
        body = patched(body, "_vector_step", vector_step_no_cond)
    if "flatopt" in variant:
        flat = lambda tcfg: optax.flatten(orig_optimizer(tcfg))
        body = patched(body, "optimizer", flat)
        state = state.replace(learners=state.learners.replace(
            opt_state=jax.vmap(flat(tcfg).init)(state.learners.params)))
    return jax.jit(body), jax.block_until_ready(state), hp, tasks


orig_optimizer = dqn.optimizer


def patched(body, name, value):
    """``body`` traced with ``dqn.<name>`` replaced by ``value``."""
    def traced(*args):
        old = getattr(dqn, name)
        setattr(dqn, name, value)
        try:
            return body(*args)
        finally:
            setattr(dqn, name, old)
    return traced


def vector_step_no_cond(tcfg, env, net, hp_G, tasks_GxK, carry):
    """dqn._vector_step with the update round unconditional (the chunk is past learning_starts
    and train_every is 1): no predicate to copy to the host at every step."""
    state, stats = carry
    act = jax.vmap(lambda ln, hp, task: dqn.act_step(tcfg, env, net, ln, hp, task, state.t))
    learners, tr, finished_GxE = act(state.learners, hp_G, tasks_GxK)
    t = state.t + 1
    learners, updates, loss_G = dqn._train_round(tcfg, net, learners, hp_G, state.updates,
                                                 t * tcfg.num_envs)
    done_GxE = ~jnp.isnan(finished_GxE)
    stats = dqn.ChunkStats(
        episodes_G=stats.episodes_G + done_GxE.sum(-1),
        return_sum_G=stats.return_sum_G + jnp.where(done_GxE, finished_GxE, 0.0).sum(-1),
        loss_sum_G=stats.loss_sum_G + loss_G, loss_count=stats.loss_count + tcfg.updates_per_train,
        params_finite_G=stats.params_finite_G)
    return (dqn.TrainState(learners=learners, t=t, updates=updates), stats), (tr, finished_GxE)


def polyak_once_per_round(body):
    """The chunk with the target moved once after each round of updates (as rejax does)
    instead of after every update; traced with dqn's per-update move disabled."""
    orig_round, inc = dqn._train_round, optax.incremental_update

    def round_(tcfg, net, learners, hp_G, updates, count):
        learners, updates, loss = orig_round(tcfg, net, learners, hp_G, updates, count)
        tgt = jax.vmap(inc)(learners.params, learners.target_params, hp_G.tau)
        return learners.replace(target_params=tgt), updates, loss

    def traced(*args):
        patched = types.SimpleNamespace(**{k: getattr(optax, k) for k in dir(optax) if not k.startswith("__")})
        patched.incremental_update = lambda p, t, tau: t
        dqn.optax, dqn._train_round = patched, round_
        try:
            return body(*args)
        finally:
            dqn.optax, dqn._train_round = optax, orig_round
    return traced


def rejax_fn(anchors: Path, steps: int):
    """(jitted train continuation, ts past fill) for one seed, vmapped as the bench runs it."""
    sys.path.insert(0, str(anchors))
    import rejax
    from rejax import buffers as rbuf
    import rejax_dqn_bench as rb
    rbuf.ReplayBuffer.sample = jax.jit(rb.uniform_sample, static_argnames=("num",))
    env, env_params = rb.make_env("CartPole-v1")
    cfg = dict(rb.CARTPOLE_CONFIGS["dqn"], total_timesteps=6000, eval_freq=2000)
    algo = rejax.get_algo("dqn").create(env=env, env_params=env_params, **cfg)
    algo = algo.replace(eval_callback=lambda a, ts, rng: jnp.zeros(()), skip_initial_evaluation=True)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    ts, _ = jax.jit(jax.vmap(algo.train))(keys)
    more = algo.replace(total_timesteps=steps, eval_freq=steps)
    return jax.jit(jax.vmap(lambda ts: more.train(train_state=ts)[0])), jax.block_until_ready(ts)


def summarize(trace: dict) -> dict:
    """Per-name count and total microseconds of the trace's complete events, GPU and host."""
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    groups: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    span: dict[str, list] = {}
    for e in trace["traceEvents"]:
        if e.get("ph") != "X":
            continue
        where = "gpu" if "GPU" in names.get(e["pid"], "") or "device" in names.get(e["pid"], "").lower() else "host"
        groups[where][e["name"][:120]] += float(e.get("dur", 0))
        counts[where][e["name"][:120]] += 1
        s = span.setdefault(where, [float("inf"), 0.0])
        s[0], s[1] = min(s[0], float(e["ts"])), max(s[1], float(e["ts"]) + float(e.get("dur", 0)))
    out = {"processes": sorted(set(names.values()))}
    for where in groups:
        top = groups[where].most_common(60)
        out[where] = {"events": sum(counts[where].values()), "busy_us": round(sum(groups[where].values()), 1),
                      "span_us": round(span[where][1] - span[where][0], 1),
                      "top": [[n, counts[where][n], round(us, 1)] for n, us in top]}
    return out


def profile(fn, args, keep: Path) -> dict:
    """Run ``fn(*args)`` under the profiler; its Perfetto trace is copied to ``keep``."""
    logdir = tempfile.mkdtemp(prefix="climit-profile-")
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
        jax.block_until_ready(fn(*args))
    path = sorted(glob.glob(f"{logdir}/**/perfetto_trace.json.gz", recursive=True))[-1]
    shutil.copy(path, keep)
    with gzip.open(path) as f:
        return summarize(json.load(f))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("anchors", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--variants", default="base")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--hlo", default="", help="comma list of sides whose optimized HLO to write")
    ap.add_argument("--traces", action="store_true", help="keep the Perfetto traces")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    sides = {}
    for v in a.variants.split(","):
        t = time.perf_counter()
        fn, state, hp, tasks = climit_fn(a.steps, v)
        if f"climit_{v}" in a.hlo.split(","):
            (a.out / f"climit_{v}.hlo.txt").write_text(fn.lower(state, hp, tasks).compile().as_text())
        sides[f"climit_{v}"] = (functools.partial(lambda f, h, k, s: f(s, h, k)[0], fn, hp, tasks), state)
        print(json.dumps({"built": f"climit_{v}", "s": round(time.perf_counter() - t, 1)}), flush=True)
    t = time.perf_counter()
    rfn, rts = rejax_fn(a.anchors, a.steps)
    if "rejax" in a.hlo.split(","):
        (a.out / "rejax.hlo.txt").write_text(rfn.lower(rts).compile().as_text())
    sides["rejax"] = (rfn, rts)
    print(json.dumps({"built": "rejax", "s": round(time.perf_counter() - t, 1)}), flush=True)
    states = {k: jax.block_until_ready(f(s)) for k, (f, s) in sides.items()}  # warm
    times = collections.defaultdict(list)
    for _ in range(a.repeats):
        for k, (f, _) in sides.items():
            t = time.perf_counter()
            states[k] = jax.block_until_ready(f(states[k]))
            times[k].append(time.perf_counter() - t)
    for k, v in times.items():
        v = np.asarray(v)
        print(json.dumps({"side": k, "steps": a.steps, "median_s": round(float(np.median(v)), 5),
                          "min_s": round(float(v.min()), 5),
                          "env_steps_per_s_median": round(a.steps / float(np.median(v)), 1),
                          "backend": jax.default_backend(),
                          "device": jax.devices()[0].device_kind}), flush=True)
    if a.no_profile:
        return
    summaries = {}
    for k, (f, _) in sides.items():
        keep = a.out / f"trace_{k}.json.gz" if a.traces else Path(tempfile.mkdtemp()) / "t.json.gz"
        summary = summaries[k] = profile(f, (states[k],), keep)
        (a.out / "profiles.json").write_text(json.dumps(summaries, indent=1))
        head = {w: {x: summary[w][x] for x in ("events", "busy_us", "span_us")}
                for w in ("gpu", "host") if w in summary}
        print(json.dumps({"profile": k, **head}), flush=True)


if __name__ == "__main__":
    main()
