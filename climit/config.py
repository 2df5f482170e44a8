"""Typed, frozen experiment configuration.

One frozen dataclass per component, composed into :class:`ExperimentConfig`. Every field carries
a one-line doc (shown by ``climit COMMAND --help`` and the README's config reference) and its
constraints, so a bad value stops a command before any work with a message naming the key.

Loading: ``load(path, overrides)`` starts from the defaults, applies the YAML file (which holds
only what differs; ``extends: other.yaml`` chains presets), then dotted overrides
``section.key=value`` whose values are parsed as YAML scalars/lists.

Shape fields (sizes, counts, layer widths) are static Python values; scalar hyperparameters that
the teacher can sweep inside one compiled program are listed in ``teacher.sweep``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from climit.errors import ClimitError


class FrozenMap(dict):
    """A read-only, hashable dict (frozen configs must stay hashable for ``jax.jit`` statics)."""

    def _blocked(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("config mappings are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _blocked  # type: ignore

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


class ConfigError(ClimitError, ValueError):
    """A configuration problem, with the dotted key it concerns."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def did_you_mean(name: str, options: typing.Iterable[str]) -> str:
    """`` (did you mean 'lr'?)`` for the option closest to a mistyped ``name`` (case aside:
    ``cartpole`` finds ``CartPole-v1``), or '' when none is close."""
    by_lower = {o.lower(): o for o in options}
    close = difflib.get_close_matches(name.lower(), by_lower, n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


# Step counters inside the jitted learners and rollouts are int32 (JAX's default integers).
MAX_STEPS = 2**31 - 1


def field(default: Any, doc: str, *, min: float | None = None, max: float | None = None,
          min_exclusive: bool = False) -> Any:
    """A dataclass field with a one-line doc and optional numeric bounds."""
    meta = {"doc": doc, "min": min, "max": max, "min_exclusive": min_exclusive}
    if isinstance(default, list) or (isinstance(default, dict)
                                     and not isinstance(default, FrozenMap)):
        raise TypeError("mutable defaults are not allowed; use tuples")
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run lives and its root seed."""

    name: str = field("default", "run name; artifacts go to RUNS_DIR/NAME")
    runs_dir: str = field("runs", "directory holding all runs")
    seed: int = field(0, "root seed; every stage derives its keys from it (climit/keys.py)",
                      min=0, max=2**32 - 1)
    tensorboard: bool = field(False, "also write TensorBoard event files (needs tensorboardX)")
    wandb_project: str = field("", "also log to this Weights & Biases project (needs wandb)")

    def check(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError("run.name", f"must be a plain directory name, got {self.name!r}")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """The environment family the teacher learns and the imitator is trained on."""

    name: str = field("darkroom", "environment name (see `climit envs`)")
    transfer: str = field("keydoor", "environment of the new-family test (c); '' disables it")
    sticky_action_prob: float = field(0.0, "probability of repeating the previous action",
                                      min=0.0, max=1.0)
    train_tasks: int = field(64, "tasks sampled from the train split for teacher learners",
                             min=1)

    def check(self) -> None:
        from climit import envs  # local: envs imports jax, config must stay cheap to import

        for key, name in (("env.name", self.name), ("env.transfer", self.transfer)):
            if key == "env.transfer" and name == "":
                continue
            if name not in envs.names():
                raise ConfigError(key, f"unknown environment {name!r}"
                                  f"{did_you_mean(name, envs.names())}; "
                                  f"allowed: {', '.join(envs.names())}")
        spec = envs.spec(self.name)
        if self.train_tasks > spec.num_tasks["train"]:
            raise ConfigError("env.train_tasks", f"{self.train_tasks} exceeds the "
                              f"{spec.num_tasks['train']} train tasks of {self.name}")
        if self.transfer == self.name:  # a variant (darkroom -> darkroom_hard) is a new env
            raise ConfigError("env.transfer", f"{self.transfer} is env.name itself; test (c) needs "
                              f"an environment the imitator was not trained on ('' skips it)")
        if self.transfer:
            other = envs.spec(self.transfer)
            if other.interface != spec.interface:
                same = [n for n in envs.names()
                        if n != self.name and envs.spec(n).interface == spec.interface]
                fix = f"set env.transfer to one of {', '.join(same)}, or " if same else \
                    "no other environment has it: set env.transfer "
                raise ConfigError("env.transfer", f"{self.transfer} uses interface "
                                  f"{other.interface!r} but {self.name} uses "
                                  f"{spec.interface!r}; test (c) needs the same interface: "
                                  f"{fix}to '' to skip test (c)")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """The DQN learner whose learning histories are recorded."""

    network: Literal["mlp", "minatar"] = field("mlp",
                                               "Q-network: MLP, or the MinAtar-paper conv net")
    hidden: tuple[int, ...] = field((64, 64), "hidden layer widths of the MLP (or dense width of "
                                    "the conv net)")
    dueling: bool = field(False, "dueling value/advantage heads")
    activation: Literal["relu", "swish", "tanh"] = field("relu", "hidden-layer activation")
    double: bool = field(True, "Double DQN targets")
    seeds: int = field(1, "independent learners per task (vmapped)", min=1)
    num_envs: int = field(1, "parallel environments per learner", min=1)
    total_env_steps: int = field(20_000, "environment steps per learner (all its envs together)",
                                 min=1, max=MAX_STEPS)
    buffer_size: int = field(10_000, "replay capacity in transitions per learner", min=1)
    batch_size: int = field(64, "transitions per TD update", min=1)
    learning_starts: int = field(1_000, "env steps per learner before the first update", min=0)
    train_every: int = field(1, "vector env steps between update rounds", min=1)
    updates_per_train: int = field(1, "TD updates per update round", min=1)
    optimizer: Literal["adam", "rmsprop"] = field("adam", "Adam, or centred RMSProp")
    opt_eps: float = field(1e-8,
                           "denominator epsilon of Adam / RMSProp (RMSProp: outside the root)",
                           min=0.0, min_exclusive=True)
    rms_decay: float = field(0.95, "RMSProp decay of the first and second moment averages",
                             min=0.0, max=1.0)
    lr: float = field(1e-3, "learning rate", min=0.0, min_exclusive=True)
    lr_final_frac: float = field(1.0, "learning rate at the end as a fraction of lr (linear from "
                                 "learning_starts; 1: constant)", min=0.0, max=1.0)
    gamma: float = field(0.99, "discount", min=0.0, max=1.0)
    eps_start: float = field(1.0, "initial epsilon of epsilon-greedy", min=0.0, max=1.0)
    eps_end: float = field(0.05, "final epsilon", min=0.0, max=1.0)
    eps_decay_steps: int = field(4_000, "env steps per learner of linear epsilon decay, from "
                                 "learning_starts", min=1)
    target: Literal["hard", "polyak"] = field("hard", "target network update rule")
    target_period: int = field(500, "updates between hard target copies", min=1)
    tau: float = field(0.005, "Polyak rate of the soft target update", min=0.0, max=1.0)
    loss: Literal["huber", "mse"] = field("huber", "TD loss")
    max_grad_norm: float = field(10.0, "global gradient-norm clip (0 disables)", min=0.0)
    chunk_steps: int = field(1_000, "vector env steps per jitted chunk (logging/history "
                             "granularity)", min=1)
    scan_unroll: int = field(1, "vector steps per iteration of a chunk's lax.scan, and TD updates "
                             "per iteration of a round's (the same learning up to float rounding; "
                             ">1 means fewer loop iterations, which a latency-bound GPU run may "
                             "gain from)", min=1)
    checkpoint_every: int = field(10, "chunks between full-state checkpoints", min=1)
    keep_checkpoints: int = field(2, "full-state checkpoints kept for resuming (at least 2: a save "
                                  "drops the oldest before the new one is verified)", min=2)
    snapshot_steps: tuple[int, ...] = field((10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
                                             1_000_000, 2_000_000, 5_000_000, 10_000_000),
                                            "env steps per learner at which parameters are kept "
                                            "for good")
    q_log_period: int = field(100, "vector env steps between recordings of Q-values (0 disables)",
                              min=0)
    eval_episodes: int = field(10, "greedy evaluation episodes per learner at the end", min=1)
    # Must equal the fields of dqn.HParams (a test checks); the sweep field's doc names them.
    SWEEPABLE = ("lr", "gamma", "eps_end", "eps_decay_steps", "tau")
    sweep: dict[str, tuple[float, ...]] = field(FrozenMap(),
                                                f"scalar hyperparameters vmapped as one axis "
                                                f"({', '.join(SWEEPABLE)}), values zipped into "
                                                f"points, e.g. {{lr: [1e-3, 3e-4]}}")

    def check(self) -> None:
        if any(h < 1 for h in self.hidden) or not self.hidden:
            raise ConfigError("teacher.hidden", f"needs one or more positive widths, "
                              f"got {self.hidden}")
        # its one dense layer would ignore the rest
        if self.network == "minatar" and len(self.hidden) != 1:
            raise ConfigError("teacher.hidden", f"the MinAtar network (conv + one dense layer) "
                              f"takes one width, e.g. [128]; got {list(self.hidden)}")
        if self.batch_size > self.buffer_size:
            raise ConfigError("teacher.batch_size", f"{self.batch_size} exceeds buffer_size "
                              f"{self.buffer_size}")
        if self.num_envs > self.buffer_size:  # one write would give two envs the same row
            raise ConfigError("teacher.num_envs", f"{self.num_envs} exceeds buffer_size "
                              f"{self.buffer_size}")
        if self.total_env_steps % self.num_envs:
            raise ConfigError("teacher.total_env_steps", f"{self.total_env_steps} is not a "
                              f"multiple of num_envs {self.num_envs}")
        vector_steps = self.total_env_steps // self.num_envs
        updates = vector_steps // self.train_every * self.updates_per_train
        if updates > MAX_STEPS:  # the update counter (hard target copies) is an int32
            raise ConfigError("teacher.updates_per_train", f"{self.updates_per_train} per round "
                              f"every {self.train_every} of {vector_steps} vector steps makes "
                              f"{updates} TD updates per learner, more than {MAX_STEPS}")
        if self.q_log_period and (self.chunk_steps % self.q_log_period
                                  or vector_steps % self.q_log_period):
            raise ConfigError("teacher.q_log_period", f"{self.q_log_period} must divide "
                              f"chunk_steps {self.chunk_steps} and the {vector_steps} vector steps "
                              f"per learner")
        if self.learning_starts >= self.total_env_steps:
            raise ConfigError("teacher.learning_starts", f"{self.learning_starts} leaves no "
                              f"updates within total_env_steps {self.total_env_steps}")
        steps = list(self.snapshot_steps)
        if steps != sorted(set(steps)) or any(s < 1 for s in steps):
            raise ConfigError("teacher.snapshot_steps", "must be positive and strictly increasing")
        lengths = set()
        metadata = {f.name: f.metadata for f in dataclasses.fields(self)}
        for key, values in self.sweep.items():
            if key not in self.SWEEPABLE:
                raise ConfigError(f"teacher.sweep.{key}", f"cannot be swept; allowed: "
                                  f"{', '.join(self.SWEEPABLE)}")
            if not values:
                raise ConfigError(f"teacher.sweep.{key}", "needs at least one value")
            for i, v in enumerate(values):  # swept values obey the field's own type and bounds
                at = f"teacher.sweep.{key}[{i}]"
                _check_bounds(at, _convert(at, v, _hints(TeacherConfig)[key]), metadata[key])
            lengths.add(len(values))
        if len(lengths) > 1:
            raise ConfigError("teacher.sweep", "every swept key needs the same number of values "
                              "(the values are zipped into one axis)")


@dataclasses.dataclass(frozen=True)
class HistoriesConfig:
    """On-disk learning histories written by the teacher."""

    streams_per_chunk: int = field(64, "streams (learner x env) stored together in one chunk file",
                                   min=1)
    compression_level: int = field(3, "zlib compression level of chunk files (0: stored)", min=0,
                                   max=9)
    record_q: bool = field(True, "record Q-values at teacher.q_log_period")


@dataclasses.dataclass(frozen=True)
class ImitatorConfig:
    """The transformer imitator (Algorithm Distillation) and its training."""

    variant: Literal["ad", "ed", "shuffled", "single_episode"] = field(
        "ad", "dataset: full histories (AD), expert distillation, shuffled or single-episode "
        "context")
    context_len: int = field(60,
                             "steps each token attends to (attention window and KV-cache size, L)",
                             min=1)
    train_windows: int = field(2, "training sequence length in context windows (>1 trains the "
                               "sliding window of the first layer; layer l reaches l*(L-1) "
                               "steps back, so n_layers+1 windows train every layer's)", min=1)
    subsample: int = field(1, "keep every k-th episode of a history (the evaluation's ED "
                           "control keeps every episode of its part)", min=1)
    ed_fraction: float = field(0.1, "final fraction of a history used by ED", min=0.0, max=1.0,
                               min_exclusive=True)
    horizon: int = field(0, "use only the first H env steps (per learner) of each history (0: all)",
                         min=0)
    heldout_fraction: float = field(0.2, "fraction of the history's tasks (learners if it has one "
                                    "task) kept out of training for held-out loss/accuracy",
                                    min=0.0, max=0.9, min_exclusive=True)
    use_reward: bool = field(True, "feed the previous reward into the token")
    d_model: int = field(64, "model width (D)", min=1)
    n_layers: int = field(2, "transformer blocks", min=1)
    n_heads: int = field(4, "attention heads (N in imitator/model.py)", min=1)
    mlp_ratio: int = field(4, "MLP hidden width as a multiple of d_model", min=1)
    dropout: float = field(0.0, "dropout rate", min=0.0, max=0.9)
    label_smoothing: float = field(0.0, "label smoothing of the action loss", min=0.0, max=1.0)
    seeds: int = field(1, "independently trained imitators (vmapped, one stacked checkpoint)",
                       min=1)
    batch_size: int = field(16, "sequences per step per seed (split over devices)", min=1)
    train_steps: int = field(300, "optimizer steps", min=1)
    lr: float = field(3e-4, "peak AdamW learning rate (cosine decay to 10% of it)", min=0.0,
                      min_exclusive=True)
    warmup_steps: int = field(100, "linear warmup steps", min=0)
    weight_decay: float = field(1e-4, "AdamW weight decay (matrices only)", min=0.0)
    max_grad_norm: float = field(1.0, "global gradient-norm clip (0 disables)", min=0.0)
    log_every: int = field(20, "steps between metrics records (and NaN checks)", min=1)
    eval_every: int = field(200, "steps between held-out evaluations and checkpoints", min=1)
    eval_batches: int = field(4, "held-out batches per evaluation", min=1)
    keep_checkpoints: int = field(2, "latest checkpoints kept (plus the best; at least 2: a save "
                                  "drops the oldest before the new one is verified)", min=2)
    prefetch: int = field(2, "batches assembled ahead by a background thread (0: none)", min=0)
    data_memory_mb: int = field(512, "decoded history held in memory per dataset (train, held-out) "
                                "for vectorized batches; larger histories are read window by "
                                "window (same batches, slower)", min=0)
    compute_dtype: Literal["auto", "float32", "bfloat16"] = field(
        "auto", "activation dtype: bf16 on GPU/TPU, fp32 on CPU when auto")
    attention: Literal["auto", "xla", "cudnn"] = field(
        "auto", "attention kernel: auto = cuDNN on GPU when bf16 and head size % 8 == 0 (not "
        "for the single-episode ablation), else XLA")

    def check(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError("imitator.d_model", f"{self.d_model} is not divisible by "
                              f"n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError("imitator.n_heads", f"head size d_model/n_heads = "
                              f"{self.d_model // self.n_heads} must be even (RoPE)")
        if self.warmup_steps >= self.train_steps:
            raise ConfigError("imitator.warmup_steps", f"{self.warmup_steps} must be below "
                              f"train_steps {self.train_steps}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """In-context evaluation of the frozen imitator against the DQN (the three claim tests)."""

    tasks: int = field(10, "held-out evaluation tasks (K) per family, never used in training",
                       min=1)
    env_steps: int = field(0, "env steps per evaluation rollout of tests (a) and (c) "
                           "(0: teacher.total_env_steps, the DQN's whole learning curve)",
                           min=0, max=MAX_STEPS)
    transfer_env_steps: int = field(0, "env steps per rollout in the new family, test (c) "
                                    "(0: as eval.env_steps)", min=0, max=MAX_STEPS)
    transfer_tasks: int = field(0, "held-out tasks of the new family, test (c) (0: eval.tasks, "
                                "or all that family holds out if fewer)", min=0)
    horizon: int = field(0, "H of test (b): its imitator sees only the first H env steps of each "
                         "history (0: eval.env_steps // horizon_factor)", min=0)
    horizon_factor: int = field(10, "test (b) evaluates from H to this many times H", min=2)
    horizon_controls: bool = field(False, "test (b) trains ED and the ablated control on the "
                                   "first H steps too (false: reuse the full-history controls)")
    ablation: Literal["single_episode", "shuffled"] = field(
        "single_episode", "context-ablated control: context cut to the current episode, or "
        "episodes shuffled across the history")
    dqn_seeds: int = field(2, "fresh DQN learners per held-out task (the DQN reference)", min=1)
    random_seeds: int = field(2, "random-policy rollouts per held-out task (the floor)", min=1)
    mode: Literal["greedy", "sample"] = field("sample", "imitator action selection")
    curve_points: int = field(100, "most grid points per curve (episodes are averaged into "
                              "bins); test (b)'s has one at every multiple of H when "
                              "horizon_factor is larger", min=2)
    final_frac: float = field(0.1, "fraction of a curve's last points that makes its final return "
                              "(the initial return is its first point)", min=0.0, max=0.5,
                              min_exclusive=True)
    bootstrap: int = field(1_000, "bootstrap resamples for intervals", min=10)
    confidence: float = field(0.95, "interval coverage", min=0.5, max=0.999)
    chunk_steps: int = field(2_000, "env steps per jitted rollout chunk (progress granularity)",
                             min=1)

    def check(self) -> None:
        if self.env_steps and self.horizon and self.horizon * self.horizon_factor > self.env_steps:
            raise ConfigError("eval.horizon", f"{self.horizon} x horizon_factor "
                              f"{self.horizon_factor} exceeds eval.env_steps {self.env_steps}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: teach -> imitate -> evaluate -> report."""

    run: RunConfig = RunConfig()
    env: EnvConfig = EnvConfig()
    teacher: TeacherConfig = TeacherConfig()
    histories: HistoriesConfig = HistoriesConfig()
    imitator: ImitatorConfig = ImitatorConfig()
    eval: EvalConfig = EvalConfig()

    def check(self) -> None:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "check"):
                section.check()
        from climit import envs

        heldout = envs.spec(self.env.name).num_tasks["heldout"]
        if envs.spec(self.env.name).task_dim and self.eval.tasks > heldout:
            raise ConfigError("eval.tasks", f"{self.eval.tasks} exceeds the {heldout} held-out "
                              f"tasks of {self.env.name}")
        problem = _transfer_tasks_problem(self, envs)
        if problem:
            raise ConfigError("eval.transfer_tasks", problem)
        if self.teacher.network == "minatar" and len(envs.spec(self.env.name).obs_shape) != 3:
            raise ConfigError("teacher.network", f"the MinAtar network needs image observations; "
                              f"{self.env.name} has {envs.spec(self.env.name).obs_shape} (use mlp)")
        episode_len = envs.spec(self.env.name).episode_len
        if self.teacher.eval_episodes * episode_len > MAX_STEPS:  # one int32-counted rollout
            raise ConfigError("teacher.eval_episodes", f"{self.teacher.eval_episodes} episodes "
                              f"of up to {episode_len} steps exceed the {MAX_STEPS} steps of one "
                              f"rollout")
        if self.imitator.horizon and self.imitator.horizon > self.teacher.total_env_steps:
            raise ConfigError("imitator.horizon", f"{self.imitator.horizon} exceeds "
                              f"teacher.total_env_steps {self.teacher.total_env_steps}")


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ExperimentConfig))


# ---------------------------------------------------------------------------------------------
# Typed conversion of raw YAML values
# ---------------------------------------------------------------------------------------------

def _transfer_tasks_problem(cfg: "ExperimentConfig", envs: Any) -> str | None:
    """Why ``eval.transfer_tasks`` cannot be met, or None."""
    n = cfg.eval.transfer_tasks
    if not n:
        return None
    if not cfg.env.transfer:
        return ("sets test (c)'s tasks, but env.transfer names no new family; with "
                "env.transfer= add eval.transfer_tasks=0 (configs/darkroom.yaml sets it)")
    spec = envs.spec(cfg.env.transfer)
    if spec.task_dim and n > spec.num_tasks["heldout"]:
        return f"{n} exceeds the {spec.num_tasks['heldout']} held-out tasks of {cfg.env.transfer}"
    return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false",
            str: "a string"}.get(tp, str(tp))


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML value to ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    bad = ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        item_tp = typing.get_args(tp)[0]
        return tuple(_convert(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, val_tp = typing.get_args(tp)
        return FrozenMap({str(k): _convert(f"{key}.{k}", v, val_tp) for k, v in value.items()})
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp in (int, float):
        return _convert_number(_number(value), tp, bad)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # `name: 123` in YAML is a fine name
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")


def _convert_number(value: Any, tp: type, bad: ConfigError) -> int | float:
    """``value`` as a finite int or float (an int field takes 1e3 but not 2.5), else ``bad``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad
    if tp is int and value != int(value):
        raise bad
    return tp(value)


def _check_bounds(key: str, value: Any, meta: dict) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        op = ">" if meta.get("min_exclusive") else ">="
        raise ConfigError(key, f"must be {op} {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(key, f"must be <= {hi}, got {value}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


# What other RL code calls a few keys, where the closest spelling here is another key
# (learning_rate would find learning_starts): named outright.
_ALIASES = {"learning_rate": "lr", "discount": "gamma"}


def _unknown_key_hint(name: str, names: typing.Collection[str], prefix: str) -> str:
    """The guess an unknown key's error offers: the same key in another section first, then
    a common alias, then the closest key of its own. Closest alone misleads where a key sits
    in the wrong section: ``teacher.seed`` would find ``teacher.seeds`` (how many DQNs learn)
    for ``run.seed``, and ``imitator.total_env_steps`` would find ``imitator.train_steps``."""
    sections = _hints(ExperimentConfig)
    elsewhere = [f"{s}.{name}" for s in SECTIONS if s != prefix
                 and name in {f.name for f in dataclasses.fields(sections[s])}]
    if elsewhere:
        return f" (did you mean {' or '.join(map(repr, elsewhere))}?)"
    if _ALIASES.get(name) in names:
        return f" (did you mean {_ALIASES[name]!r}?)"
    return did_you_mean(name, names)


def _build(cls: type, raw: dict, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw`` (a possibly partial mapping), validating every key."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix, f"expected a mapping, got {raw!r}")
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(raw) - set(names)))  # str: YAML keys may be numbers
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(key, f"unknown key{_unknown_key_hint(unknown[0], names, prefix)}; "
                          f"allowed: {', '.join(names)}")
    kwargs = {}
    for name, f in names.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw.get(name, {}), key)
            continue
        value = _convert(key, raw[name], tp) if name in raw else f.default
        _check_bounds(key, value, f.metadata)
        kwargs[name] = value
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Loading, overrides, serialisation
# ---------------------------------------------------------------------------------------------

def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "sweep":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last) and
    reads numbers as YAML 1.2 does: decimal only. YAML 1.1's octal and base 60 read ``010`` as
    8 and ``1:30`` as 90 without a word; here they stay strings, which a numeric field then
    reads as decimal (``010`` is 10) or refuses (``1:30``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value
                if k.tag != "tag:yaml.org,2002:merge"]  # `<<:` merges: explicit keys win
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {twice[0]!r} is given twice in one mapping", node.start_mark)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int",
                                    re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"),
                                    list("-+0123456789"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml_problem(e: Exception) -> str:
    """One line: what PyYAML found wrong and where (its own text spans several lines)."""
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or ' '.join(str(e).split())}{where}"


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a preset, following ``extends:`` (relative to the file) before applying it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError("extends", f"cycle through {path}")
    if not path.is_file():
        raise ConfigError("--config", f"no such file: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError("--config", f"{path} is not valid YAML: {_yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of sections")
    # A section whose keys are all commented out reads as None: it changes nothing (kept, it
    # would also replace the section of the file it extends when merged).
    raw = {k: v for k, v in raw.items() if not (k in SECTIONS and v is None)}
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError("extends", f"expected a path, got {parent!r}")
    target = (path.parent / parent).resolve()
    if not target.is_file():  # checked here, where the file that names it is known
        raise ConfigError("extends", f"{path} extends {target}, which does not exist")
    return _deep_merge(_read_yaml(target, seen + (path,)), raw)


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string: a numeric string becomes the number, for
    numeric fields only (a quoted "007" stays a name)."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return float(text) if any(c in text for c in ".eE") else int(text)
    return value


def _field_type(parts: list[str]) -> Any:
    """The type of the config field at ``parts`` (e.g. ['run', 'name'] -> str), or None."""
    tp: Any = ExperimentConfig
    for part in parts:
        hints = _hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'teacher.lr=0.0003'`` -> (['teacher', 'lr'], 0.0003). Values are parsed as YAML (the
    strict reader's: ``3e-4`` stays the string '3e-4' here, and a numeric field converts it
    when the config is built)."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like section.key=value")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(key, "an override key must be section.key (e.g. teacher.lr)")
    try:
        parsed = yaml.load(value, Loader=_StrictLoader) if value.strip() else ""
    except yaml.constructor.ConstructorError as e:  # a key twice in a mapping
        raise ConfigError(key, _yaml_problem(e)) from None
    except yaml.YAMLError:
        parsed = value
    if _field_type(parts) is str and not isinstance(parsed, str):
        parsed = value.strip()  # run.name=0001 names run "0001", not 1 (YAML would read a number)
    return parts, parsed


def _section(raw: dict, parts: list[str]) -> dict:
    """The dict in ``raw`` that holds the override key ``parts`` (created as needed)."""
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parts), "cannot set a key inside a scalar")
    return node


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Defaults, then the preset at ``path``, then dotted ``overrides``; validated.

    Raises:
        ConfigError: naming the offending key and what is allowed.
    """
    raw: dict = _read_yaml(Path(path)) if path else {}
    for text in overrides:
        parts, value = parse_override(text)
        _section(raw, parts)[parts[-1]] = value
    cfg = _build(ExperimentConfig, raw, "")
    cfg.check()
    return cfg


def to_dict(cfg: Any) -> dict:
    """A plain, YAML/JSON-serialisable dict of a config (tuples become lists)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def from_dict(raw: dict) -> ExperimentConfig:
    """Inverse of :func:`to_dict` (validated)."""
    cfg = _build(ExperimentConfig, raw, "")
    cfg.check()
    return cfg


def as_read_now(stored: dict) -> dict:
    """A config dict recorded by an earlier run, as this version reads it: fields added since
    at their defaults, so a comparison with today's config names only settings that differ
    (not ``None -> 0`` for a field that run did not have yet). Returned as stored when this
    version cannot read it (a field it no longer has, a value it refuses), and empty when
    nothing was recorded (not the defaults)."""
    if not stored:
        return {}
    try:
        return to_dict(from_dict(stored))
    except ConfigError:
        return stored


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# Teacher fields that change how the learning is computed, not what is learned: left out of
# every fingerprint and config comparison, so a run may resume with another value, and runs
# recorded before such a field existed still match.
TEACHER_NEUTRAL_FIELDS = ("scan_unroll",)
# Teacher fields that say only how often the run saves itself and how many saves it keeps (a
# resume from any chunk end equals the uninterrupted run): compared at their defaults, so a run
# may resume with other values and a run with the defaults keeps the fingerprint it had.
TEACHER_STORAGE_FIELDS = ("checkpoint_every", "keep_checkpoints")


def teacher_identity(teacher: "TeacherConfig | dict") -> dict:
    """The teacher section as fingerprints and resume checks compare it (neutral fields out,
    storage fields at their defaults, fields added since at the default they came with out)."""
    d = to_dict(teacher) if dataclasses.is_dataclass(teacher) else dict(teacher)
    d.update({k: getattr(TeacherConfig, k) for k in TEACHER_STORAGE_FIELDS if k in d})
    return section_identity(TeacherConfig, {k: v for k, v in d.items()
                                            if k not in TEACHER_NEUTRAL_FIELDS})


def config_diff(saved: dict, now: dict) -> list[str]:
    """``key: old -> new`` for every difference between two views of a config, each a mapping
    whose values are sections (dicts, compared key by key: ``imitator.lr: 0.001 -> 0.0005``)
    or single dotted keys (``run.seed: 0 -> 1``). Keys come in ``now``'s order, so a caller
    lists what matters most first; a key missing on one side shows as None there."""
    diffs = []
    for name in dict.fromkeys([*now, *saved]):
        a, b = saved.get(name), now.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{name}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                      for k in dict.fromkeys([*b, *a]) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


# Fields added after runs were recorded, with the default they were added at: a section's field
# at that default stays out of every fingerprint and resume check, so artifacts made before the
# field existed still match the config that made them (a value other than the default counts).
# A new field of a fingerprinted section goes here, or every earlier run trains again: the
# fingerprints of the default config are pinned by a test that says so.
ADDED_FIELDS: dict[type, dict[str, Any]] = {EvalConfig: {"transfer_tasks": 0}}


def section_identity(cls: type, section: dict) -> dict:
    """A section (a dict of ``cls``'s fields) without the fields added since at their default."""
    added = to_dict(ADDED_FIELDS.get(cls, {}))  # a tuple default as the list a section holds
    return {k: v for k, v in section.items() if k not in added or v != added[k]}


def _fingerprinted(part: Any) -> Any:
    if not dataclasses.is_dataclass(part):
        return part
    return section_identity(type(part), to_dict(part))


def fingerprint(*parts: Any) -> str:
    """A short stable hash of config sections, used to decide whether a stage's artifacts match."""
    blob = json.dumps([_fingerprinted(p) for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reference(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows (key, type, default, doc) for every leaf field, in declaration order."""
    rows = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(reference(tp, key))
            continue
        default = to_dict(f.default) if not isinstance(f.default, str) else f.default
        rows.append((key, _type_name(tp), json.dumps(default), f.metadata.get("doc", "")))
    return rows


def reference_markdown() -> str:
    """The README's config reference table (a test checks the README holds exactly this)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tp, default, doc in reference():
        lines.append(f"| `{key}` | {tp} | `{default}` | {doc} |")
    return "\n".join(lines)
