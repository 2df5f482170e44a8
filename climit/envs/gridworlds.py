"""Dark Room, Dark Room Hard and Dark Key-to-Door in the gymnax 1.0 environment API.

All three are partially observed grid worlds whose observation is the agent's (x, y) only: the
goal (or key and door) is invisible and must be found by exploring, which is what makes them the
standard testbed of in-context RL (Algorithm Distillation). A *task* is the hidden cell(s); it
lives in ``EnvParams`` so that ``vmap`` over params is ``vmap`` over tasks. Each world says what
its tasks are: ``all_tasks()`` enumerates them (int32 [N, K], a fixed order that
:mod:`climit.envs` splits into training and held-out tasks) and ``with_task(params, task_K)``
sets one. An environment without these two has a single task.

Actions (all three): 0 up (y+1), 1 down (y-1), 2 left (x-1), 3 right (x+1), 4 no-op.
Moves into a wall leave the agent in place. ``terminated`` is natural termination (Key-to-Door:
the door is opened); ``truncated`` is the time limit, applied by the gymnax base class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

# (dx, dy) per action; index = action.
MOVES_Ax2 = jnp.array([[0, 1], [0, -1], [-1, 0], [1, 0], [0, 0]], dtype=jnp.int32)
NUM_ACTIONS = 5


def _move(pos_2: jax.Array, action: jax.Array, size: int) -> jax.Array:
    return jnp.clip(pos_2 + MOVES_Ax2[action], 0, size - 1)


class _Grid(environment.Environment):
    """What the three grid worlds share: ``size``, the five moves, and the (x, y) observation.
    ``step_env`` returns termination itself; gymnax's legacy ``is_terminated`` helper, which
    climit never calls, answers False (no state outlives the step that ends its episode)."""

    size: int

    def get_obs(self, state, params=None, key=None) -> jax.Array:
        return state.pos

    def is_terminated(self, state, params) -> jax.Array:
        return jnp.array(False)

    @property
    def num_actions(self) -> int:
        return NUM_ACTIONS

    def action_space(self, params=None) -> spaces.Discrete:
        return spaces.Discrete(NUM_ACTIONS)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(0, self.size - 1, (2,), jnp.int32)


@struct.dataclass
class RoomState(environment.EnvState):
    pos: jax.Array  # int32 [2], (x, y)
    reached: jax.Array  # bool: goal already reached this episode (used by Hard)
    time: int


@struct.dataclass
class RoomParams(environment.EnvParams):
    goal: jax.Array = struct.field(default_factory=lambda: jnp.array([0, 0], jnp.int32))
    max_steps_in_episode: int = 20


class DarkRoom(_Grid, environment.Environment[RoomState, RoomParams]):
    """A ``size``×``size`` room; reward 1 on every step that ends on the goal (or, with
    ``sparse=True``, only the first time the goal is reached). Starts at the centre."""

    def __init__(self, size: int = 9, episode_len: int = 20, sparse: bool = False):
        super().__init__()
        self.size, self.episode_len, self.sparse = size, episode_len, sparse

    @property
    def default_params(self) -> RoomParams:
        return RoomParams(goal=jnp.array([0, 0], jnp.int32), max_steps_in_episode=self.episode_len)

    def all_tasks(self) -> np.ndarray:
        """Every goal cell (x, y), x-major: int32 [size * size, 2]."""
        return np.array([(x, y) for x in range(self.size) for y in range(self.size)], np.int32)

    def with_task(self, params: RoomParams, task_K: jax.Array) -> RoomParams:
        return params.replace(goal=task_K[:2])

    def optimal_return(self, goal_xy: tuple[int, int]) -> float:
        """Best achievable return of an episode from the centre: walk the Manhattan distance d,
        then stay. Dense: reward comes on every step that *ends* on the goal, so a goal at
        distance d >= 1 pays on steps d..T (T - d + 1 rewards) and one at the centre on all T
        steps (no-op). Sparse: 1, the first step that ends on the goal. 0 past the time limit.
        """
        c = self.size // 2
        d = abs(goal_xy[0] - c) + abs(goal_xy[1] - c)
        if d > self.episode_len:
            return 0.0
        if self.sparse:
            return 1.0
        return float(self.episode_len if d == 0 else self.episode_len - d + 1)

    def step_env(self, key, state: RoomState, action, params: RoomParams):
        pos = _move(state.pos, action, self.size)
        on_goal = jnp.all(pos == params.goal)
        if self.sparse:
            reward = jnp.logical_and(on_goal, ~state.reached)
        else:
            reward = on_goal
        state = RoomState(pos=pos, reached=state.reached | on_goal, time=state.time + 1)
        obs = self.get_obs(state, params)
        return obs, state, reward.astype(jnp.float32), jnp.array(False), {}

    def reset_env(self, key, params: RoomParams):
        centre = jnp.full((2,), self.size // 2, dtype=jnp.int32)
        state = RoomState(pos=centre, reached=jnp.array(False), time=0)
        return self.get_obs(state, params), state

    @property
    def name(self) -> str:
        return "DarkRoomHard" if self.sparse else "DarkRoom"


@struct.dataclass
class KeyDoorState(environment.EnvState):
    pos: jax.Array  # int32 [2]
    has_key: jax.Array  # bool
    time: int


@struct.dataclass
class KeyDoorParams(environment.EnvParams):
    key_pos: jax.Array = struct.field(default_factory=lambda: jnp.array([0, 0], jnp.int32))
    door_pos: jax.Array = struct.field(default_factory=lambda: jnp.array([8, 8], jnp.int32))
    max_steps_in_episode: int = 50


class KeyDoor(_Grid, environment.Environment[KeyDoorState, KeyDoorParams]):
    """Dark Key-to-Door: an invisible key then an invisible door, +1 once each; the door pays
    (and ends the episode) only once the key is held. The start cell is uniform at random."""

    def __init__(self, size: int = 9, episode_len: int = 50):
        super().__init__()
        self.size, self.episode_len = size, episode_len

    @property
    def default_params(self) -> KeyDoorParams:
        return KeyDoorParams(max_steps_in_episode=self.episode_len)

    def all_tasks(self) -> np.ndarray:
        """Every (key x, key y, door x, door y) of two distinct cells, key-major: int32
        [size² (size² - 1), 4]."""
        cells = [(x, y) for x in range(self.size) for y in range(self.size)]
        return np.array([k + d for k in cells for d in cells if k != d], np.int32)

    def with_task(self, params: KeyDoorParams, task_K: jax.Array) -> KeyDoorParams:
        return params.replace(key_pos=task_K[:2], door_pos=task_K[2:4])

    def step_env(self, key, state: KeyDoorState, action, params: KeyDoorParams):
        pos = _move(state.pos, action, self.size)
        gets_key = jnp.all(pos == params.key_pos) & ~state.has_key
        opens_door = jnp.all(pos == params.door_pos) & (state.has_key | gets_key)
        # The key is picked up on this step; the door can open on the same step only if the
        # two cells coincide, which task sampling rules out.
        reward = gets_key.astype(jnp.float32) + opens_door.astype(jnp.float32)
        state = KeyDoorState(pos=pos, has_key=state.has_key | gets_key, time=state.time + 1)
        return self.get_obs(state, params), state, reward, opens_door, {}

    def reset_env(self, key, params: KeyDoorParams):
        pos = jax.random.randint(key, (2,), 0, self.size, dtype=jnp.int32)
        state = KeyDoorState(pos=pos, has_key=jnp.array(False), time=0)
        return self.get_obs(state, params), state

    @property
    def name(self) -> str:
        return "KeyDoor"

