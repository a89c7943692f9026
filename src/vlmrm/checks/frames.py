"""Labelled frame sets: frames rendered exactly as in training, each with its ground truth.

:func:`make_frame_set` picks the set for an :class:`~vlmrm.envs.EnvConfig`:

- classic control (``CartPole``, ``MountainCarContinuous``, ``Pendulum``): uniform states over
  the visible state space, plus trajectories that approach the goal (the pole swinging up to
  upright, the car driving up to the flag); success and the progress score from the state;
- ``Humanoid``: the pose library of :mod:`vlmrm.checks.poses`: every task's keyframes, the
  neutral poses, small random perturbations of each, and trajectories from each neutral pose
  to each keyframe of the config's task; success from the env's pose detectors (all eight are
  recorded), progress = the fraction of the way along a trajectory;
- any other gymnasium id: frames of random-policy rollouts, with whatever ground truth the env
  defines (none for plain gymnasium envs: only reward statistics and pictures then).

A folder of your own images with a labels file (:class:`FolderFrames`) is a frame set too.

The same ``seed`` gives the same frames, so two reward models or prompt sets are compared on
identical inputs. Frames are produced in chunks (:meth:`FrameSet.chunks`), so large sets at
the paper's frame size never sit in memory at once.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vlmrm.errors import ConfigError, InputFileError

if TYPE_CHECKING:  # importing vlmrm.envs selects a render backend; only do it when needed
    from vlmrm.envs import EnvConfig

__all__ = [
    "CLASSIC_ENVS",
    "PROGRESS_SCORES",
    "ClassicControlFrames",
    "FolderFrames",
    "FrameSet",
    "HumanoidPoseFrames",
    "LabelledFrames",
    "RolloutFrames",
    "collect_classic_control_frames",
    "iter_classic_control_frames",
    "iter_labelled_folder",
    "make_frame_set",
    "sample_classic_control_states",
]

# What the progress score of each env is, for tables and axes: higher is closer to the goal.
PROGRESS_SCORES = {
    "CartPole": "-|pole angle| (rad)",
    "Pendulum": "-|pendulum angle| (rad)",
    "MountainCarContinuous": "car position",
    "Humanoid": "fraction of the way from a neutral pose to the goal pose",
}
CLASSIC_ENVS = ("CartPole", "MountainCarContinuous", "Pendulum")


@dataclass
class LabelledFrames:
    """Frames with their ground truth (all per-frame fields have length ``N``).

    Attributes:
        frames: uint8 ``[N, H, W, 3]``; ``None`` once only the labels are kept.
        success: bool ``[N]``, the task's goal label; ``None`` where the env defines none.
        progress: float64 ``[N]``, the task's progress score (higher = closer to the goal;
            NaN where unknown).
        trajectory: int64 ``[N]``, id of the goal-approaching trajectory the frame is on
            (``-1``: none).
        time: float64 ``[N]``, position along that trajectory in [0, 1] (NaN off one).
        kind: what each frame is: ``"uniform"``, ``"trajectory"``, ``"keyframe"``,
            ``"neutral"``, ``"perturbed"``, ``"rollout"`` or ``"file"``.
        label: a short description of each frame (pose name, state, file name).
        shows: the humanoid task whose keyframe the frame shows (also for its
            perturbations), ``"neutral"`` for neutral poses, ``""`` otherwise.
        detections: bool ``[N, T]``: every humanoid pose detector on every frame (columns in
            ``vlmrm.envs.HUMANOID_TASKS`` order); ``None`` for other envs.
    """

    frames: torch.Tensor | None
    success: torch.Tensor | None
    progress: torch.Tensor
    trajectory: torch.Tensor = field(default=None)  # type: ignore[assignment]
    time: torch.Tensor = field(default=None)  # type: ignore[assignment]
    kind: list[str] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    shows: list[str] = field(default_factory=list)
    detections: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.progress.numel()
        if self.trajectory is None:
            self.trajectory = torch.full((n,), -1, dtype=torch.int64)
        if self.time is None:
            self.time = torch.full((n,), math.nan, dtype=torch.float64)
        self.kind = self.kind or [""] * n
        self.label = self.label or [""] * n
        self.shows = self.shows or [""] * n

    def __len__(self) -> int:
        return self.progress.numel()

    def labels_only(self) -> LabelledFrames:
        """The same ground truth without the frames (what a report keeps)."""
        return replace(self, frames=None)

    @staticmethod
    def concatenate(chunks: Sequence[LabelledFrames]) -> LabelledFrames:
        """Chunks joined along the frame axis (frames kept only if every chunk has them)."""
        if not chunks:
            raise ValueError("No frames: the frame set is empty.")

        def cat(name: str) -> torch.Tensor | None:
            parts = [getattr(c, name) for c in chunks]
            return None if any(p is None for p in parts) else torch.cat(parts)

        return LabelledFrames(
            frames=cat("frames"),
            success=cat("success"),
            progress=cat("progress"),
            trajectory=cat("trajectory"),
            time=cat("time"),
            kind=[k for c in chunks for k in c.kind],
            label=[k for c in chunks for k in c.label],
            shows=[k for c in chunks for k in c.shows],
            detections=cat("detections"),
        )


class FrameSet:
    """A labelled frame set for one environment, rendered lazily.

    Attributes:
        description: one line for reports (e.g. ``"CartPole: 750 uniform states + 10
            trajectories of 25"``).
        progress_name: what the progress score is (axis labels).
        num_frames: frames in the set.
    """

    description: str = ""
    progress_name: str = ""
    num_frames: int = 0

    def chunks(self, chunk_size: int = 64) -> Iterator[LabelledFrames]:
        """Yield :class:`LabelledFrames` of at most ``chunk_size`` frames, in a fixed order."""
        raise NotImplementedError


def make_frame_set(config: EnvConfig, num_frames: int, seed: int = 0) -> FrameSet:
    """The frame set that checks a reward for ``config``'s env (see the module docstring).

    Raises:
        ConfigError: ``num_frames`` below the set's minimum (the message names it).
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ConfigError(f"frames={num_frames!r} must be a positive integer (e.g. 200).")
    if config.env_id == "Humanoid":
        return HumanoidPoseFrames(config, num_frames, seed)
    if config.env_id in CLASSIC_ENVS:
        return ClassicControlFrames(config, num_frames, seed)
    return RolloutFrames(config, num_frames, seed)


# ---------------------------------------------------------------------------------------------
# Classic control: uniform states and goal-approaching trajectories


def sample_classic_control_states(env_id: str, num_states: int, seed: int) -> np.ndarray:
    """Uniform states over the visible state space, float64 ``[N, S]``.

    - ``CartPole``: ``(x, x_dot, theta, theta_dot)`` with x uniform on the track [-2.4, 2.4],
      theta uniform on [-pi, pi], velocities 0 (they do not show in a frame).
    - ``MountainCarContinuous``: ``(position, velocity)`` with position uniform on
      [-1.2, 0.6], velocity 0.
    - ``Pendulum``: ``(theta, theta_dot)`` with theta uniform on [-pi, pi], velocity 0.
    """
    rng = np.random.default_rng(seed)
    states = np.zeros((num_states, 4 if env_id == "CartPole" else 2))
    if env_id == "CartPole":
        states[:, 0] = rng.uniform(-2.4, 2.4, num_states)
        states[:, 2] = rng.uniform(-math.pi, math.pi, num_states)
    elif env_id == "MountainCarContinuous":
        states[:, 0] = rng.uniform(-1.2, 0.6, num_states)
    elif env_id == "Pendulum":
        states[:, 0] = rng.uniform(-math.pi, math.pi, num_states)
    else:
        raise ConfigError(
            f"No uniform state sampler for env_id {env_id!r}; use one of {list(CLASSIC_ENVS)}, "
            "or check on a folder of frames with a labels file."
        )
    return states


def _classic_trajectories(
    env_id: str, count: int, steps: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` trajectories of ``steps`` states that approach the goal, ``[count, steps, S]``:
    the pole swinging from a random angle beyond 90 degrees to upright (cart at a random
    place), the car driving from a random place in the valley to the end of the track past
    the flag, the pendulum swinging up."""
    t = np.linspace(0.0, 1.0, steps)
    out = np.zeros((count, steps, 4 if env_id == "CartPole" else 2))
    for i in range(count):
        if env_id == "CartPole":
            start = rng.choice([-1.0, 1.0]) * rng.uniform(math.pi / 2, math.pi)
            out[i, :, 0] = rng.uniform(-2.0, 2.0)
            out[i, :, 2] = start * (1.0 - t)
        elif env_id == "MountainCarContinuous":
            start = rng.uniform(-1.2, -0.4)
            out[i, :, 0] = start + t * (0.6 - start)
        else:
            start = rng.choice([-1.0, 1.0]) * rng.uniform(math.pi / 2, math.pi)
            out[i, :, 0] = start * (1.0 - t)
    return out


def _set_state(env_id: str, inner, state: np.ndarray) -> tuple[bool, float]:
    """Put the raw gymnasium env ``inner`` in ``state``; return ``(success, progress score)``."""
    if env_id == "CartPole":
        inner.state = state.copy()
        return inner.is_success(), -abs(float(state[2]))
    if env_id == "MountainCarContinuous":
        inner.state = state.astype(np.float32)
        # The goal is absorbing, so every state at or past the flag is a success state.
        return bool(state[0] >= inner.goal_position), float(state[0])
    from vlmrm.envs.classic_control import PENDULUM_SUCCESS_ANGLE, pendulum_angle

    inner.state = state.copy()
    inner.last_u = None  # no torque arrow in the frame
    angle = pendulum_angle(float(state[0]))
    return abs(angle) < PENDULUM_SUCCESS_ANGLE, -abs(angle)


def _render_states(
    config: EnvConfig,
    states: np.ndarray,
    chunk_size: int,
    seed: int,
    trajectory: np.ndarray,
    time: np.ndarray,
) -> Iterator[LabelledFrames]:
    from vlmrm.envs import make_gym_env

    env = make_gym_env(config, seed=seed)
    inner = env.unwrapped
    try:
        for start in range(0, len(states), chunk_size):
            frames, success, progress = [], [], []
            stop = min(start + chunk_size, len(states))
            for state in states[start:stop]:
                is_goal, score = _set_state(config.env_id, inner, state)
                frames.append(torch.from_numpy(env.render()))
                success.append(is_goal)
                progress.append(score)
            on_trajectory = trajectory[start:stop] >= 0
            yield LabelledFrames(
                torch.stack(frames),
                torch.tensor(success, dtype=torch.bool),
                torch.tensor(progress, dtype=torch.float64),
                trajectory=torch.from_numpy(trajectory[start:stop].copy()),
                time=torch.from_numpy(time[start:stop].copy()),
                kind=["trajectory" if on else "uniform" for on in on_trajectory],
                label=[_state_label(config.env_id, s) for s in states[start:stop]],
            )
    finally:
        env.close()


def _state_label(env_id: str, state: np.ndarray) -> str:
    if env_id == "CartPole":
        return f"x={state[0]:+.2f} angle={math.degrees(state[2]):+.0f}deg"
    if env_id == "MountainCarContinuous":
        return f"position={state[0]:+.2f}"
    return f"angle={math.degrees(state[0]):+.0f}deg"


def iter_classic_control_frames(
    config: EnvConfig, num_frames: int, seed: int = 0, chunk_size: int = 256
) -> Iterator[LabelledFrames]:
    """Render uniform states (:func:`sample_classic_control_states`) in chunks.

    Args:
        config: a :class:`vlmrm.envs.EnvConfig` for ``CartPole``, ``MountainCarContinuous`` or
            ``Pendulum``; frames are rendered exactly as in training (size, textures).
        num_frames: how many states in all.
        seed: seed of the state sampler.
        chunk_size: frames per yielded chunk (bounds memory: a 400x600 frame is 0.7 MB).

    Yields:
        :class:`LabelledFrames` with frames ``[n, H, W, 3]``, ``n <= chunk_size``.
    """
    states = sample_classic_control_states(config.env_id, num_frames, seed)
    trajectory = np.full(num_frames, -1, dtype=np.int64)
    time = np.full(num_frames, math.nan)
    yield from _render_states(config, states, chunk_size, seed, trajectory, time)


def collect_classic_control_frames(
    config: EnvConfig, num_frames: int, seed: int = 0
) -> LabelledFrames:
    """All frames of :func:`iter_classic_control_frames` at once: uint8 ``[N, H, W, 3]``."""
    return LabelledFrames.concatenate(list(iter_classic_control_frames(config, num_frames, seed)))


class ClassicControlFrames(FrameSet):
    """Uniform states plus goal-approaching trajectories of a classic-control env.

    A quarter of the frames (at least 2 trajectories of 5 states, at most 10 trajectories) lie
    on trajectories; the rest are uniform states. Progress: ``-|angle|`` for CartPole and
    Pendulum, the car's position for MountainCar.

    Args:
        config: the env (``CartPole``, ``MountainCarContinuous`` or ``Pendulum``).
        num_frames: frames in all (at least 20).
        seed: seed of the states.
    """

    MINIMUM = 20

    def __init__(self, config: EnvConfig, num_frames: int, seed: int = 0) -> None:
        if num_frames < self.MINIMUM:
            raise ConfigError(
                f"frames={num_frames} is too few to check a {config.env_id} reward; use at "
                f"least {self.MINIMUM} (a few hundred give stable figures)."
            )
        self.config, self.seed, self.num_frames = config, seed, num_frames
        count = min(10, max(2, num_frames // 40))
        steps = max(5, (num_frames // 4) // count)
        uniform = num_frames - count * steps
        rng = np.random.default_rng(seed)
        uniform_states = sample_classic_control_states(config.env_id, uniform, seed)
        paths = _classic_trajectories(config.env_id, count, steps, rng)
        self.states = np.concatenate([uniform_states, paths.reshape(count * steps, -1)])
        self.trajectory = np.concatenate(
            [np.full(uniform, -1), np.repeat(np.arange(count), steps)]
        ).astype(np.int64)
        self.time = np.concatenate(
            [np.full(uniform, math.nan), np.tile(np.linspace(0, 1, steps), count)]
        )
        self.description = (
            f"{config.env_id}: {uniform} uniform states + {count} trajectories of {steps} "
            "states approaching the goal"
        )
        self.progress_name = PROGRESS_SCORES[config.env_id]

    def chunks(self, chunk_size: int = 64) -> Iterator[LabelledFrames]:
        yield from _render_states(
            self.config, self.states, chunk_size, self.seed, self.trajectory, self.time
        )


# ---------------------------------------------------------------------------------------------
# Humanoid: the pose library


class HumanoidPoseFrames(FrameSet):
    """The humanoid pose library as a frame set (see :mod:`vlmrm.checks.poses`).

    In order: the neutral poses and every task's keyframes; random perturbations of them
    (cycling through the poses); trajectories from each neutral pose that does not already
    meet the config's task to each of its keyframes. About half of the frames beyond the
    poses themselves are perturbations, half trajectory steps (without a task, all are
    perturbations). Every frame carries all eight detectors' verdicts; ``success`` is the
    config's task's (``None`` without a task).

    Args:
        config: a ``Humanoid`` env config (look, camera and frame size are used as given).
        num_frames: frames in all (at least the number of poses plus 3 per trajectory).
        seed: seed of the perturbations.
        joint_noise: std of the perturbations' joint noise, degrees.
        tilt_noise: std of the perturbations' root rotation about each axis, degrees.
    """

    def __init__(
        self,
        config: EnvConfig,
        num_frames: int,
        seed: int = 0,
        joint_noise: float = 5.0,
        tilt_noise: float = 2.0,
    ) -> None:
        from vlmrm.checks.poses import KEYFRAMES, NEUTRAL_POSES, all_poses

        self.config, self.num_frames, self.seed = config, num_frames, seed
        self.joint_noise, self.tilt_noise = joint_noise, tilt_noise
        self.poses = all_poses()
        task = config.task
        goals = KEYFRAMES[task] if task is not None else ()
        # Which neutral poses already meet the task is known only once they are placed;
        # the pairs are filtered when rendering starts and the steps are sized for all.
        self._pairs = [(start, goal) for start in NEUTRAL_POSES for goal in goals]
        minimum = len(self.poses) + 3 * len(self._pairs)
        if num_frames < minimum:
            trajectories = f" and {len(self._pairs)} trajectories" if self._pairs else ""
            raise ConfigError(
                f"frames={num_frames} is too few for the humanoid pose library "
                f"({len(self.poses)} poses{trajectories}); use at least {minimum} (a few "
                "hundred give stable figures)."
            )
        self.description = f"Humanoid pose library ({len(self.poses)} poses, perturbations)"
        self.progress_name = PROGRESS_SCORES["Humanoid"]

    def _plan(self, placer, detector) -> list[tuple[str, str, str, np.ndarray, int, float]]:
        """``(kind, label, shows, qpos, trajectory, time)`` for every frame, in order."""
        from vlmrm.checks.poses import interpolate_qpos

        task = self.config.task
        rng = np.random.default_rng(self.seed)
        plan = []
        base = []
        for pose in self.poses:
            qpos = placer.qpos(pose)
            kind = "keyframe" if pose.task is not None else "neutral"
            shows = pose.task if pose.task is not None else "neutral"
            plan.append((kind, pose.name, shows, qpos, -1, math.nan))
            base.append((pose, qpos, shows))
        pairs = []
        for start, goal in self._pairs:
            placer.place(placer.qpos(start))
            if not detector(task, placer.data):  # a start that meets the task approaches nothing
                pairs.append((start, goal))
        remaining = self.num_frames - len(plan)
        steps = max(3, (remaining // 2) // len(pairs)) if pairs else 0
        perturbations = remaining - steps * len(pairs)
        for i in range(perturbations):
            pose, qpos, shows = base[i % len(base)]
            noisy = placer.perturb(qpos, rng, self.joint_noise, self.tilt_noise)
            plan.append(
                ("perturbed", f"{pose.name}~{i // len(base) + 1}", shows, noisy, -1, math.nan)
            )
        for index, (start, goal) in enumerate(pairs):
            a, b = placer.qpos(start), placer.qpos(goal)
            for t in np.linspace(0.0, 1.0, steps):
                label = f"{start.name}->{goal.name}@{t:.2f}"
                plan.append(("trajectory", label, "", interpolate_qpos(a, b, t), index, float(t)))
        self.description = (
            f"Humanoid pose library: {len(self.poses)} poses, {perturbations} perturbations, "
            f"{len(pairs)} trajectories of {steps} steps" + (f" towards {task}" if task else "")
        )
        return plan

    def chunks(self, chunk_size: int = 64) -> Iterator[LabelledFrames]:
        from vlmrm.checks.poses import PosePlacer
        from vlmrm.envs import HUMANOID_TASKS, make_gym_env
        from vlmrm.envs.humanoid import HumanoidPoseDetector

        env = make_gym_env(self.config, seed=self.seed)
        inner = env.unwrapped
        placer = PosePlacer(inner.model, inner.data)
        detector = HumanoidPoseDetector(inner.model)
        task = self.config.task
        try:
            plan = self._plan(placer, detector)
            for start in range(0, len(plan), chunk_size):
                part = plan[start : start + chunk_size]
                frames, detections = [], []
                for _, _, _, qpos, _, _ in part:
                    placer.place(qpos)
                    detections.append([detector(name, inner.data) for name in HUMANOID_TASKS])
                    frames.append(torch.from_numpy(env.render()))
                detected = torch.tensor(detections, dtype=torch.bool)
                time = torch.tensor([p[5] for p in part], dtype=torch.float64)
                success = None
                if task is not None:
                    success = detected[:, HUMANOID_TASKS.index(task)].clone()
                yield LabelledFrames(
                    torch.stack(frames),
                    success,
                    progress=time.clone(),  # known on the trajectories only
                    trajectory=torch.tensor([p[4] for p in part], dtype=torch.int64),
                    time=time,
                    kind=[p[0] for p in part],
                    label=[p[1] for p in part],
                    shows=[p[2] for p in part],
                    detections=detected,
                )
        finally:
            env.close()


# ---------------------------------------------------------------------------------------------
# Any gymnasium id: random-policy rollouts


class RolloutFrames(FrameSet):
    """Frames of random-policy episodes of any env, with the ground truth it defines.

    Args:
        config: the env.
        num_frames: steps in all (episodes restart when they end).
        seed: seed of the env resets and the random actions.
    """

    def __init__(self, config: EnvConfig, num_frames: int, seed: int = 0) -> None:
        from vlmrm.envs import env_defines_success

        self.config, self.num_frames, self.seed = config, num_frames, seed
        self.defines_success = env_defines_success(config)
        self.description = f"{config.env_id}: {num_frames} steps of random-policy rollouts"
        self.progress_name = "(none)"

    def chunks(self, chunk_size: int = 64) -> Iterator[LabelledFrames]:
        from vlmrm.envs import make_gym_env

        env = make_gym_env(self.config)
        env.action_space.seed(self.seed)
        episode = 0
        _, info = env.reset(seed=self.seed)
        step = 0
        try:
            produced = 0
            while produced < self.num_frames:
                frames, success, labels = [], [], []
                while len(frames) < chunk_size and produced < self.num_frames:
                    frames.append(torch.from_numpy(env.render()))
                    success.append(bool(info.get("success", False)))
                    labels.append(f"episode {episode} step {step}")
                    produced += 1
                    _, _, terminated, truncated, info = env.step(env.action_space.sample())
                    step += 1
                    if terminated or truncated:
                        episode, step = episode + 1, 0
                        _, info = env.reset(seed=self.seed + episode)
                n = len(frames)
                yield LabelledFrames(
                    torch.stack(frames),
                    torch.tensor(success, dtype=torch.bool) if self.defines_success else None,
                    torch.full((n,), math.nan, dtype=torch.float64),
                    kind=["rollout"] * n,
                    label=labels,
                )
        finally:
            env.close()


# ---------------------------------------------------------------------------------------------
# Your own frames: a folder with a labels file


def iter_labelled_folder(labels_file: str | Path, batch_size: int = 64) -> Iterator[LabelledFrames]:
    """Read the images a labels CSV names, in batches of consecutive equally sized frames.

    The CSV has a header with columns ``file`` (an image path, relative to the CSV's folder),
    ``success`` (``1``/``0``/``true``/``false``) and, optionally, ``progress`` (a number,
    higher = closer to the goal; empty = unknown, NaN).

    Yields:
        :class:`LabelledFrames` with frames ``[b, H, W, 3]``, ``b <= batch_size``.
    """
    from vlmrm.media import read_frames

    labels_file = Path(labels_file)
    if not labels_file.is_file():
        raise InputFileError(
            f"Labels file {str(labels_file)!r} does not exist; give a CSV with the header "
            "'file,success[,progress]'."
        )
    with labels_file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "success"} - set(reader.fieldnames or ())
        if missing:
            raise InputFileError(
                f"Labels file {str(labels_file)!r} lacks column(s) {sorted(missing)}; it needs "
                "a header 'file,success[,progress]'."
            )
        rows = list(reader)
    if not rows:
        raise InputFileError(f"Labels file {str(labels_file)!r} has no rows.")

    frames: list[np.ndarray] = []
    success: list[bool] = []
    progress: list[float] = []
    names: list[str] = []

    def batch() -> LabelledFrames:
        return LabelledFrames(
            torch.from_numpy(np.stack(frames)),
            torch.tensor(success, dtype=torch.bool),
            torch.tensor(progress, dtype=torch.float64),
            kind=["file"] * len(frames),
            label=list(names),
        )

    for row in rows:
        flag = row["success"].strip().lower()
        if flag not in ("1", "0", "true", "false"):
            raise InputFileError(
                f"success={row['success']!r} for {row['file']!r} in {str(labels_file)!r}; "
                "use 1/0 or true/false."
            )
        _, frame = next(read_frames(labels_file.parent / row["file"]))
        if frames and (frame.shape != frames[0].shape or len(frames) == batch_size):
            yield batch()
            frames, success, progress, names = [], [], [], []
        frames.append(frame)
        success.append(flag in ("1", "true"))
        names.append(row["file"])
        text = (row.get("progress") or "").strip()
        try:
            progress.append(float(text) if text else math.nan)
        except ValueError as error:
            raise InputFileError(
                f"progress={text!r} for {row['file']!r} in {str(labels_file)!r} is not a "
                "number; leave it empty where unknown."
            ) from error
    yield batch()


class FolderFrames(FrameSet):
    """Your own frames: the images a labels CSV names (see :func:`iter_labelled_folder`)."""

    def __init__(self, labels_file: str | Path) -> None:
        self.labels_file = Path(labels_file)
        self.description = f"frames listed in {self.labels_file}"
        self.progress_name = "progress (from the labels file)"
        self.num_frames = 0  # known once read

    def chunks(self, chunk_size: int = 64) -> Iterator[LabelledFrames]:
        yield from iter_labelled_folder(self.labels_file, chunk_size)
