"""Tests for vlmrm.envs: real gymnasium envs, real MuJoCo rendering (EGL/OSMesa) at tiny sizes."""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import EnvBase

from vlmrm import keys
from vlmrm.envs import (
    EnvConfig,
    RenderBackendError,
    VLMRMEnv,
    env_defines_success,
    make_env,
    make_gym_env,
    render_backend,
)
from vlmrm.envs.humanoid import HumanoidPoseDetector
from vlmrm.envs.torchrl_env import _SleepingParallelEnv

SMALL = {"render_height": 48, "render_width": 40}

FRAME_CONFIGS = {
    "humanoid_textured": EnvConfig("Humanoid", task="kneeling", **SMALL),
    "humanoid_stock": EnvConfig("Humanoid", textured=False, **SMALL),
    "cartpole": EnvConfig("CartPole", **SMALL),
    "mountaincar_textured": EnvConfig("MountainCarContinuous", **SMALL),
    "mountaincar_stock": EnvConfig("MountainCarContinuous", textured=False, **SMALL),
    "pendulum": EnvConfig("Pendulum", **SMALL),
    "other_mujoco_id": EnvConfig("Hopper-v5", **SMALL),
}


@pytest.mark.parametrize("name", list(FRAME_CONFIGS))
def test_rollout_keys_shapes_dtypes(name: str) -> None:
    config = FRAME_CONFIGS[name]
    env = make_env(config, num_envs=1, seed=0)
    try:
        td = env.rollout(3)
    finally:
        env.close()
    nxt = td[keys.NEXT]
    assert td.batch_size == torch.Size([1, 3])
    assert nxt[keys.PIXELS].shape == (1, 3, 48, 40, 3)
    assert nxt[keys.PIXELS].dtype == torch.uint8
    assert td[keys.PIXELS].shape == (1, 3, 48, 40, 3)  # the reset frame too
    assert nxt[keys.PIXELS].float().std() > 0  # not a blank frame
    assert nxt[keys.OBSERVATION].dtype == torch.float32
    assert nxt[keys.REWARD].shape == (1, 3, 1)
    assert nxt[keys.REWARD].dtype == torch.float32
    for key in (keys.DONE, keys.TERMINATED, keys.TRUNCATED, keys.SUCCESS):
        assert nxt[key].shape == (1, 3, 1) and nxt[key].dtype == torch.bool
    assert nxt[keys.PROGRESS].shape == (1, 3, 1)
    assert nxt[keys.PROGRESS].dtype == torch.float32
    assert not nxt[keys.TERMINATED].any()


def test_action_specs() -> None:
    cartpole = make_env(EnvConfig("CartPole", **SMALL))
    humanoid = make_env(EnvConfig("Humanoid", **SMALL))
    try:
        # Discrete envs use categorical (index) actions, shape [] per env.
        assert cartpole.action_spec.dtype == torch.int64
        assert cartpole.action_spec.shape == (1,)
        assert cartpole.action_spec.space.n == 2
        assert humanoid.action_spec.shape == (1, 17)
        assert torch.allclose(humanoid.action_spec.space.high, torch.full((1, 17), 0.4))
    finally:
        cartpole.close()
        humanoid.close()


def test_truncation_and_auto_reset() -> None:
    env = make_env(EnvConfig("Pendulum", episode_length=3, **SMALL), num_envs=2, seed=1)
    try:
        td = env.rollout(7, break_when_any_done=False)
    finally:
        env.close()
    truncated = td[keys.NEXT, keys.TRUNCATED][..., 0]
    expected = torch.tensor([False, False, True] * 2 + [False])
    assert torch.equal(truncated, expected.expand(2, 7))
    assert torch.equal(td[keys.NEXT, keys.DONE], td[keys.NEXT, keys.TRUNCATED])
    assert not td[keys.NEXT, keys.TERMINATED].any()


def test_textured_and_stock_humanoid_differ() -> None:
    frames = []
    for textured in (True, False):
        env = make_gym_env(EnvConfig("Humanoid", textured=textured, **SMALL), seed=0)
        frames.append(env.render().astype(np.int16))
        env.close()
    assert np.abs(frames[0] - frames[1]).mean() > 10


def test_camera_setting_changes_frame() -> None:
    frames = []
    for camera in (None, {"azimuth": 90.0}, {"distance": 6.0}):
        env = make_gym_env(EnvConfig("Humanoid", camera=camera, **SMALL), seed=0)
        frames.append(env.render().astype(np.int16))
        env.close()
    assert np.abs(frames[0] - frames[1]).mean() > 2
    assert np.abs(frames[0] - frames[2]).mean() > 2


def test_shadows_and_reflections_options_render() -> None:
    config = EnvConfig("Humanoid", textured=False, shadows=True, reflections=False, **SMALL)
    env = make_gym_env(config, seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (48, 40, 3)


def test_cartpole_never_terminates_and_success_matches_thresholds() -> None:
    env = make_gym_env(EnvConfig("CartPole", episode_length=120, **SMALL), seed=0)
    obs, info = env.reset(seed=0)
    successes = []
    for t in range(120):
        obs, reward, terminated, truncated, info = env.step(1)  # always push right: it falls
        x, _, theta, _ = (float(v) for v in env.unwrapped.state)  # float64, unlike obs
        assert float(obs[2]) == pytest.approx(theta, abs=1e-6)
        assert not terminated
        assert truncated == (t == 119)
        assert -math.pi <= theta <= math.pi
        assert abs(x) <= 2.4
        inside = abs(x) <= 2.4 and abs(theta) <= 12 * 2 * math.pi / 360
        assert info["success"] == inside
        assert reward == float(inside)
        assert info["progress"] == pytest.approx(theta)
        successes.append(info["success"])
    assert successes[0] and not all(successes)  # it did fall, and the episode went on
    env.close()


def test_mountaincar_goal_is_absorbing() -> None:
    env = make_gym_env(EnvConfig("MountainCarContinuous", episode_length=200, **SMALL), seed=0)
    env.reset(seed=0)
    env.unwrapped.state = np.array([0.44, 0.05])  # about to reach the flag at 0.45
    _, reward, terminated, _, info = env.step(np.array([1.0], dtype=np.float32))
    assert info["success"] and not terminated and reward > 90
    goal_position = info["progress"]
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(np.array([-1.0], dtype=np.float32))
        assert info["success"] and not terminated and not truncated
        assert reward == 0.0
        assert float(obs[0]) == pytest.approx(goal_position)
    env.close()


def test_pendulum_success() -> None:
    env = make_gym_env(EnvConfig("Pendulum", **SMALL), seed=0)
    env.reset(seed=0)
    for theta, expected in ((0.05, True), (2 * math.pi - 0.05, True), (0.5, False)):
        env.unwrapped.state = np.array([theta, 0.0])
        _, _, _, _, info = env.step(np.zeros(1, dtype=np.float32))
        assert info["success"] == expected
    env.close()


def test_humanoid_pose_detectors_on_initial_pose() -> None:
    env = make_gym_env(EnvConfig("Humanoid", task="standing", **SMALL))
    _, info = env.reset(seed=0)
    assert info["success"]  # starts standing
    # Torso height: 1.4 plus gymnasium's reset noise, uniform in +-0.01 (measured 1.3908).
    assert info["progress"] == pytest.approx(1.4, abs=0.01)
    detector = HumanoidPoseDetector(env.unwrapped.model)
    verdicts = {task: detector(task, env.unwrapped.data) for task in detector.checks}
    assert verdicts["standing"]
    for pose in ("kneeling", "lotus", "arms_raised", "splits", "one_leg", "arms_crossed"):
        assert not verdicts[pose], pose
    env.close()


def test_env_defines_success() -> None:
    assert env_defines_success(EnvConfig("Humanoid", task="splits"))
    assert not env_defines_success(EnvConfig("Humanoid"))
    assert env_defines_success(EnvConfig("CartPole"))
    assert not env_defines_success(EnvConfig("Hopper-v5"))


def test_seeds_distinct_per_env_and_reproducible() -> None:
    config = EnvConfig("Pendulum", **SMALL)
    first = make_env(config, num_envs=2, seed=5)
    second = make_env(config, num_envs=2, seed=5)
    try:
        a, b = first.reset(), second.reset()
    finally:
        first.close()
        second.close()
    assert torch.equal(a[keys.OBSERVATION], b[keys.OBSERVATION])
    assert not torch.equal(a[keys.OBSERVATION][0], a[keys.OBSERVATION][1])


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, process group, cmdline) of every process, zombies included, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry), int(fields[1]), int(fields[2]), cmdline))
    return found


def _child_pids() -> set[int]:
    """Children of this process, except multiprocessing's resource tracker (a per-interpreter
    helper shared by every spawned process, which exits with its parent)."""
    return {
        pid
        for pid, ppid, _, cmd in _processes()
        if ppid == os.getpid() and "resource_tracker" not in cmd
    }


def test_parallel_env_distinct_frames_and_clean_shutdown() -> None:
    before = _child_pids()
    env = make_env(EnvConfig("Humanoid", **SMALL), num_envs=2, seed=0, parallel=True)
    try:
        td = env.rollout(2)
        assert td[keys.NEXT, keys.PIXELS].shape == (2, 2, 48, 40, 3)
        frames = td[keys.NEXT, keys.PIXELS][:, -1].to(torch.int16)
        assert (frames[0] - frames[1]).abs().sum() > 0  # different seeds, different states
        assert len(_child_pids() - before) >= 2
    finally:
        env.close()
    assert multiprocessing.active_children() == []
    assert _child_pids() - before == set()  # no worker, alive or zombie


def test_worker_processes_leave_this_process_its_torch_threads() -> None:
    """TorchRL's ParallelEnv lowers the parent's torch threads by its worker count (it assumes
    the workers step while the parent computes); in vlmrm's sequential loop the reward model and
    SAC run after the workers have stepped, and halving their threads halved a CPU VLM's speed
    inside `vlmrm fit` (7.3 against 12.5 frames/s for a ViT-B-32 at 224x224 on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        env = make_env(
            EnvConfig("Pendulum", render_height=16, render_width=16), num_envs=2, parallel=True
        )
        try:
            env.rollout(2)
            assert torch.get_num_threads() == 2
        finally:
            env.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


class _SlowEnv(EnvBase):
    """A one-number env whose step takes ``step_s`` seconds of sleep (no CPU), or whose
    worker dies at its first step (``die``); for the ParallelEnv wait tests."""

    def __init__(self, step_s: float = 0.0, die: bool = False) -> None:
        super().__init__(batch_size=())
        self.step_s, self.die = step_s, die
        self.observation_spec = Composite(observation=Unbounded(shape=(1,)))
        self.action_spec = Bounded(-1.0, 1.0, shape=(1,))
        self.reward_spec = Unbounded(shape=(1,))

    def _reset(self, tensordict=None) -> TensorDict:
        return TensorDict(
            {"observation": torch.zeros(1), "done": torch.zeros(1, dtype=torch.bool),
             "terminated": torch.zeros(1, dtype=torch.bool)}
        )  # fmt: skip

    def _step(self, tensordict) -> TensorDict:
        if self.die:
            os._exit(3)
        time.sleep(self.step_s)
        return TensorDict(
            {"observation": tensordict["action"].clone(), "reward": torch.ones(1),
             "done": torch.zeros(1, dtype=torch.bool),
             "terminated": torch.zeros(1, dtype=torch.bool)}
        )  # fmt: skip

    def _set_seed(self, seed) -> None:
        pass


def test_parallel_env_waits_for_its_workers_without_spinning_a_core() -> None:
    """TorchRL's ParallelEnv polls its workers' done flags in a loop that never pauses, so the
    parent keeps a core busy for the whole of every step, a core the workers' renderers need
    (tools/bench_envs.py: 49 against 63 env steps/s for 2 Humanoid workers on 2 cores). vlmrm's
    waits: while its worker sleeps through 4 steps of 0.25 s, this process uses a fraction of
    that in CPU time (a spinning wait uses about all of it)."""
    assert isinstance(
        make_env(EnvConfig("Pendulum", render_height=16, render_width=16), parallel=True),
        _SleepingParallelEnv,
    )
    env = _SleepingParallelEnv(1, functools.partial(_SlowEnv, 0.25), mp_start_method="spawn")
    try:
        env.rollout(1)  # workers started
        wall, cpu = time.perf_counter(), time.process_time()
        rollout = env.rollout(4, break_when_any_done=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert rollout["next", "observation"].shape == (1, 4, 1)
    finally:
        env.close()
    assert wall >= 1.0
    assert cpu < 0.5 * wall, f"{cpu:.2f} s of CPU time in {wall:.2f} s of waiting"


def test_parallel_env_says_so_when_a_worker_dies_mid_step() -> None:
    """The wait still checks its workers: one that dies mid-step is an error, not a hang."""
    env = _SleepingParallelEnv(
        1, functools.partial(_SlowEnv, die=True), mp_start_method="spawn", daemon=True
    )
    with pytest.raises(RuntimeError, match="worker 0 dead"):
        env.rollout(2)
    with pytest.raises(RuntimeError, match="worker 0 \\(exit code 3\\)"):
        env.close(raise_if_closed=False)  # TorchRL names the failed worker as it closes
    assert multiprocessing.active_children() == []


def _collect_twice(env) -> list[TensorDict]:
    """Two 24-step batches of a deterministic policy (the action is the first observation)."""
    from torchrl.collectors import Collector

    def policy(td: TensorDict) -> TensorDict:
        return td.set("action", td[keys.OBSERVATION][..., :1].clamp(-2.0, 2.0))

    collector = Collector(env, policy, frames_per_batch=24, total_frames=48)
    try:
        return [batch.clone() for batch in collector]
    finally:
        collector.shutdown(close_env=False)


def test_parallel_env_steps_like_torchrls_own_with_fresh_copies(monkeypatch) -> None:
    """vlmrm's ParallelEnv clones each step's output out of shared memory on one thread
    (torch's copies woke its OpenMP threads while the renderers held every core: 57 against 69
    env steps/s for 2 Humanoid workers at 224x224). What a collector gets is the same as from
    TorchRL's own ParallelEnv, resets included, and each step's output is a fresh copy."""
    from torchrl.envs import ParallelEnv

    config = EnvConfig("Pendulum", render_height=64, render_width=96, episode_length=5)
    ours = make_env(config, num_envs=2, seed=3, parallel=True)
    factory = functools.partial(VLMRMEnv, config, device="cpu")
    theirs = ParallelEnv(
        2, factory, create_env_kwargs=[{"seed": 3}, {"seed": 4}], mp_start_method="spawn"
    )
    general_steps = []
    general = ParallelEnv.step_and_maybe_reset

    def counted(self, tensordict):
        if self is ours:
            general_steps.append(1)
        return general(self, tensordict)

    monkeypatch.setattr(ParallelEnv, "step_and_maybe_reset", counted)
    try:
        expected, got = _collect_twice(theirs), _collect_twice(ours)
        for mine, reference in zip(got, expected, strict=True):
            assert mine[keys.NEXT, keys.DONE].any()  # episodes of 5 steps: resets inside
            assert (mine == reference).all(), "a collected batch differs from TorchRL's"

        # (The collector closed the env at its last batch; reset starts its workers again.)
        stepped, root = ours.step_and_maybe_reset(ours.reset().set("action", torch.zeros(2, 1)))
        frame, root_frame = stepped[keys.NEXT, keys.PIXELS], root[keys.PIXELS]
        kept = frame.clone()
        shared = {
            t.untyped_storage().data_ptr() for t in ours.shared_tensordict_parent.values(True, True)
        }
        assert frame.untyped_storage().data_ptr() not in shared
        assert root_frame.untyped_storage().data_ptr() not in shared
        ours.step_and_maybe_reset(root.set("action", torch.ones(2, 1)))
        assert torch.equal(frame, kept)  # the next step left this step's frames alone
        assert general_steps == []  # every step of ours took the plain path
    finally:
        ours.close(raise_if_closed=False)
        theirs.close(raise_if_closed=False)


_CTRL_C_SCRIPT = """
import sys
from vlmrm.envs import EnvConfig, make_env

if __name__ == "__main__":
    env = make_env(EnvConfig("Pendulum", render_height=16, render_width=16), num_envs=2,
                   parallel=True)
    print("ready", flush=True)
    while True:
        env.rollout(5)
"""


@pytest.mark.slow
def test_ctrl_c_leaves_no_process_behind(tmp_path) -> None:
    """Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) during a
    parallel rollout: the trainer process and all its workers must exit, leaving no orphan."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_SCRIPT)
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", str(script)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,  # its own process group, so we can signal it like a terminal
        # A terminal's foreground program has the default Ctrl-C handling, even when pytest
        # itself runs with SIGINT ignored (started in the background, or after a test in this
        # process went through Lightning's Ctrl-C path, which ignores further SIGINTs).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        group = proc.pid
        assert len([p for p in _processes() if p[2] == group]) >= 3  # main + 2 workers
        os.killpg(group, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGABRT)  # faulthandler prints where it hangs
            proc.wait(timeout=10)
            raise AssertionError((tmp_path / "stderr.txt").read_text()[-6000:]) from None
        deadline = time.monotonic() + 10
        while [p for p in _processes() if p[2] == group] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in _processes() if p[2] == group] == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"env_id": "Humanoidd"}, "Close matches: .*Humanoid"),
        ({"env_id": "Humanoid", "render_height": 0}, "render_height"),
        ({"env_id": "Humanoid", "render_width": -5}, "render_width"),
        ({"env_id": "Humanoid", "episode_length": 0}, "episode_length"),
        ({"env_id": "Humanoid", "camera": {"azimut": 90}}, "Unknown camera key.*azimut"),
        ({"env_id": "Humanoid", "camera": {"type": "orbit"}}, "orbit"),
        ({"env_id": "Humanoid", "task": "kneel"}, "Did you mean.*kneeling"),
        ({"env_id": "CartPole", "task": "kneeling"}, "selects a Humanoid pose"),
        ({"env_id": "CartPole", "textured": True}, "no textured look"),
        ({"env_id": "CartPole", "camera": {"azimuth": 90}}, "only apply to MuJoCo"),
    ],
)
def test_bad_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_gym_env(EnvConfig(**kwargs))


def test_bad_num_envs() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        make_env(EnvConfig("Pendulum"), num_envs=0)


def test_backend_error_lists_tries_and_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_backend, "_SELECTED", None)
    monkeypatch.setattr(render_backend, "_USER_SET", False)
    monkeypatch.setattr(
        render_backend, "_TRIED", {"egl": "OSError: no EGL device", "osmesa": "OSError: nope"}
    )
    monkeypatch.setattr(render_backend, "select_backend", lambda: None)
    with pytest.raises(RenderBackendError) as info:
        render_backend.require_backend()
    message = str(info.value)
    assert "egl: OSError: no EGL device" in message
    assert "osmesa" in message
    assert "apt-get install" in message


def test_backend_selected_and_exported() -> None:
    assert os.environ["MUJOCO_GL"] == render_backend.select_backend()
    assert "MUJOCO_GL=" in render_backend.backend_report()
