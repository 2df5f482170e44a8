"""Environments: the only module that calls ``env.step``.

Every environment is seen through an *interface*: a fixed observation shape and storage dtype
and a padded action count shared by a group of environments, so that an imitator trained on one
member can act in another (the new-family test). Padded actions are masked out.

    env = make("darkroom")                        # static, hashable handle
    tasks_NxK = sample_tasks("darkroom", key, n, "train")
    obs_O, state = reset(env, key, tasks_NxK[0])  # one environment; vmap outward
    out = step(env, key, state, action, tasks_NxK[0])

``step`` keeps ``terminated`` (bootstrapping stops) and ``truncated`` (time limit, bootstrapping
continues) apart; episode boundaries are ``terminated | truncated``. Environments auto-reset:
``out.obs`` is the first observation of the next episode after a boundary, and
``out.final_obs`` the last observation of the finished one.

Axis letters: N tasks, K task dimension, O observation shape, A (padded) actions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from climit.envs import gridworlds


@dataclasses.dataclass(frozen=True)
class Interface:
    """A common observation/action space for a group of environments."""

    name: str
    obs_shape: tuple[int, ...]
    obs_dtype: str  # storage dtype of observations (histories, replay)
    num_actions: int
    observation: str = ""  # what an observation is, for people (README)
    actions: str = ""  # what the actions are, for people (README)


INTERFACES: dict[str, Interface] = {
    "grid": Interface("grid", (2,), "uint8", gridworlds.NUM_ACTIONS, "the agent's (x, y)",
                      "up, down, left, right, no-op"),
    "minatar": Interface("minatar", (10, 10, 10), "uint8", 6,
                         "10x10 frames, channels zero-padded to 10", "MinAtar's full action set"),
    "control": Interface("control", (6,), "float32", 3, "state, zero-padded",
                         "padded actions masked"),
    "bandit": Interface("bandit", (4,), "float32", 2, "gymnax's observation"),
    "metamaze": Interface("metamaze", (15,), "float32", 4, "gymnax's observation"),
    "deepsea": Interface("deepsea", (8, 8), "float32", 2, "gymnax's observation"),
}

_MINATAR = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


@dataclasses.dataclass(frozen=True)
class _Entry:
    """How to build one environment and which interface it uses (its tasks: the environment's
    own ``all_tasks``, see :func:`_all_tasks`)."""

    factory: Any  # () -> gymnax environment
    interface: str
    description: str


def _gymnax(env_id: str, **kwargs: Any):
    import gymnax

    return lambda: gymnax.make(env_id, **kwargs)[0]


# Adding an environment is one entry here (and, for a new grid world, its class with
# ``all_tasks`` and ``with_task`` in gridworlds.py).
_REGISTRY: dict[str, _Entry] = {
    "darkroom": _Entry(lambda: gridworlds.DarkRoom(9, 20), "grid",
                       "9x9 dark room, 20 steps, reward on every step on the invisible goal"),
    "darkroom_hard": _Entry(lambda: gridworlds.DarkRoom(17, 50, sparse=True), "grid",
                            "17x17 dark room, 50 steps, reward once at the goal"),
    "keydoor": _Entry(lambda: gridworlds.KeyDoor(9, 50), "grid",
                      "9x9 dark key-to-door, 50 steps, +1 key, +1 door after key, random start"),
    "CartPole-v1": _Entry(_gymnax("CartPole-v1"), "control", "gymnax classic control"),
    "Acrobot-v1": _Entry(_gymnax("Acrobot-v1"), "control", "gymnax classic control"),
    "MountainCar-v0": _Entry(_gymnax("MountainCar-v0"), "control", "gymnax classic control"),
    **{f"{g}-MinAtar": _Entry(_gymnax(f"{g}-MinAtar", use_minimal_action_set=False), "minatar",
                              "MinAtar, full 6-action set, channels padded to 10")
       for g in _MINATAR},
    "BernoulliBandit-misc": _Entry(_gymnax("BernoulliBandit-misc"), "bandit",
                                   "two-armed Bernoulli bandit (gymnax misc)"),
    "MetaMaze-misc": _Entry(_gymnax("MetaMaze-misc"), "metamaze", "meta-RL maze (gymnax misc)"),
    "DeepSea-bsuite": _Entry(_gymnax("DeepSea-bsuite"), "deepsea", "bsuite deep sea, size 8"),
}

HELDOUT_EVERY = 5  # task index i is held out iff i % 5 == 0: deterministic, spread over the grid


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _all_tasks(name: str) -> np.ndarray:
    """Every task of ``name``, in the fixed order its environment enumerates them: int32
    [N_all, K]. An environment whose tasks do not live in its params has one, of size 0."""
    gym = _entry(name).factory()
    return gym.all_tasks() if hasattr(gym, "all_tasks") else np.zeros((1, 0), np.int32)


def all_tasks(name: str, split: str) -> np.ndarray:
    """Every task of ``name`` in ``split`` ('train' or 'heldout'): int32 [N, K].

    Grid worlds hold out every task whose index in the fixed enumeration is a multiple of 5
    (Dark Room: 17 of 81 goals, leaving 64 for training; Key-to-Door: 1296 of 6480 key/door
    pairs). Single-task environments have one task in both splits: what differs between
    training and evaluation there is the environment seeds.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    tasks = _all_tasks(name)
    if len(tasks) == 1:
        return tasks
    held = np.arange(len(tasks)) % HELDOUT_EVERY == 0
    return tasks[held] if split == "heldout" else tasks[~held]


def sample_tasks(name: str, key: jax.Array, n: int, split: str) -> np.ndarray:
    """``n`` distinct tasks of ``split``, in a random order fixed by ``key``: int32 [n, K].

    Single-task environments repeat their one task ``n`` times.
    """
    if n < 0:  # order[:n] would quietly drop the last |n| tasks
        raise ValueError(f"{n} tasks requested of {name}'s {split} split")
    tasks = all_tasks(name, split)
    if len(tasks) == 1:
        return np.repeat(tasks, n, axis=0)
    if n > len(tasks):
        raise ValueError(f"{name} has {len(tasks)} {split} tasks; {n} requested")
    order = np.asarray(jax.random.permutation(key, len(tasks)))
    return tasks[order[:n]]


# ---------------------------------------------------------------------------------------------
# Specs and handles
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Everything a learner or a dataset needs to know about an environment."""

    name: str
    interface: str
    obs_shape: tuple[int, ...]  # interface observation shape
    obs_dtype: str  # interface storage dtype
    num_actions: int  # interface (padded) action count
    native_obs_shape: tuple[int, ...]
    native_num_actions: int
    episode_len: int  # time limit (truncation)
    task_dim: int
    num_tasks: dict[str, int]
    description: str

    @property
    def action_mask(self) -> np.ndarray:
        """bool [A]: True for actions the environment really has."""
        return np.arange(self.num_actions) < self.native_num_actions


def names() -> list[str]:
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(_REGISTRY)}") from None


@functools.lru_cache(maxsize=None)
def spec(name: str) -> EnvSpec:
    entry = _entry(name)
    gym = entry.factory()
    params = gym.default_params
    iface = INTERFACES[entry.interface]
    native_shape = tuple(gym.observation_space(params).shape)
    tasks = _all_tasks(name)
    return EnvSpec(
        name=name, interface=iface.name, obs_shape=iface.obs_shape, obs_dtype=iface.obs_dtype,
        num_actions=iface.num_actions, native_obs_shape=native_shape,
        native_num_actions=int(gym.num_actions), episode_len=int(params.max_steps_in_episode),
        task_dim=int(tasks.shape[1]),
        num_tasks={s: len(all_tasks(name, s)) for s in ("train", "heldout")},
        description=entry.description,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Env:
    """A static handle: hashable by identity, so it can close over jitted functions."""

    spec: EnvSpec
    gym: Any  # the gymnax environment (possibly sticky-wrapped)

    def params(self, task_K: jax.Array) -> Any:
        """gymnax params for one task (int32 [K]); tasks live in params for our grid worlds,
        which set one with ``with_task`` (a wrapper hands the call on to the world)."""
        base = self.gym.default_params
        return self.gym.with_task(base, task_K) if self.spec.task_dim else base


@functools.lru_cache(maxsize=None)
def make(name: str, sticky_action_prob: float = 0.0) -> Env:
    """The handle for ``name``; the same arguments return the same object (stable jit caches)."""
    gym = _entry(name).factory()
    if sticky_action_prob > 0.0:
        from gymnax.wrappers.purerl import StickyActionWrapper

        gym = StickyActionWrapper(gym, sticky_action_prob)
    return Env(spec=spec(name), gym=gym)


# ---------------------------------------------------------------------------------------------
# Interface mapping
# ---------------------------------------------------------------------------------------------

def to_interface(spec_: EnvSpec, obs: jax.Array) -> jax.Array:
    """Native observation -> interface observation (padded, storage dtype)."""
    pad = [(0, t - s) for s, t in zip(spec_.native_obs_shape, spec_.obs_shape)]
    if any(p[1] < 0 for p in pad) or len(spec_.native_obs_shape) != len(spec_.obs_shape):
        raise ValueError(f"{spec_.name}: observation {spec_.native_obs_shape} does not fit "
                         f"interface {spec_.obs_shape}")
    return jnp.pad(obs, pad).astype(spec_.obs_dtype)


def from_interface(spec_: EnvSpec, obs_O: jax.Array) -> jax.Array:
    """Interface observation -> native observation (drops padding); inverse of to_interface."""
    return obs_O[tuple(slice(0, s) for s in spec_.native_obs_shape)]


def to_native_action(spec_: EnvSpec, action: jax.Array) -> jax.Array:
    """Interface action -> native action. Padded actions are masked out by every policy; a
    padded action that arrives anyway is clipped to the last real action."""
    return jnp.minimum(action, spec_.native_num_actions - 1).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# Reset and step (one environment; vmap outward)
# ---------------------------------------------------------------------------------------------

class Step(NamedTuple):
    """One transition of one environment (all observations in interface form)."""

    obs: jax.Array  # O: next observation (first of a new episode after a boundary)
    state: Any
    reward: jax.Array  # float32 []
    terminated: jax.Array  # bool []: natural end; no bootstrap
    truncated: jax.Array  # bool []: time limit; bootstrap from final_obs
    final_obs: jax.Array  # O: the observation the action led to (before any auto-reset)


def reset(env: Env, key: jax.Array, task_K: jax.Array) -> tuple[jax.Array, Any]:
    obs, state = env.gym.reset(key, env.params(task_K))
    return to_interface(env.spec, obs), state


def step(env: Env, key: jax.Array, state: Any, action: jax.Array, task_K: jax.Array) -> Step:
    obs, state, reward, terminated, truncated, info = env.gym.step(
        key, state, to_native_action(env.spec, action), env.params(task_K))
    terminated = jnp.asarray(terminated, bool)
    # A step can hit the time limit and terminate at once; it is then a termination only.
    truncated = jnp.asarray(truncated, bool) & ~terminated
    return Step(obs=to_interface(env.spec, obs), state=state,
                reward=jnp.asarray(reward, jnp.float32), terminated=terminated,
                truncated=truncated, final_obs=to_interface(env.spec, info["final_observation"]))


def interface_table() -> str:
    """The README's table of interfaces, their members (from the registry) and spaces."""
    lines = ["| interface | members | observation (storage) | actions |",
             "| --- | --- | --- | --- |"]
    for iface in INTERFACES.values():
        members = ", ".join(f"`{n}`" for n, e in _REGISTRY.items() if e.interface == iface.name)
        obs = f"{iface.observation}, `{iface.obs_dtype}` {list(iface.obs_shape)}"
        actions = f"{iface.num_actions}: {iface.actions}" if iface.actions else iface.num_actions
        lines.append(f"| `{iface.name}` | {members} | {obs} | {actions} |")
    return "\n".join(lines)


def table() -> list[dict[str, Any]]:
    """One row per environment (what ``climit envs`` prints)."""
    rows = []
    for name in names():
        s = spec(name)
        rows.append({"name": name, "interface": s.interface, "obs": f"{s.obs_shape} {s.obs_dtype}",
                     "native_obs": str(s.native_obs_shape),
                     "actions": f"{s.native_num_actions}/{s.num_actions}",
                     "episode_len": s.episode_len, "train_tasks": s.num_tasks["train"],
                     "heldout_tasks": s.num_tasks["heldout"], "description": s.description})
    return rows
