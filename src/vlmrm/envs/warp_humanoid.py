"""The paper's Humanoid as N MuJoCo Warp worlds: model, batched physics, detectors and frames.

:class:`WarpHumanoidSim` steps N copies of the model that :class:`~vlmrm.envs.humanoid.
PaperHumanoidEnv` compiles (gymnasium's ``humanoid.xml``, the paper's look from
:func:`~vlmrm.envs.humanoid.apply_paper_look`) in one kernel launch per physics stage, and
ray-traces all N frames in one more. Everything it returns is a torch tensor on the sim's
device that shares memory with Warp's arrays or is computed from them there: no frame or
state makes a trip through the host.

What differs from ``Humanoid-v5`` (and why):

* solver Newton instead of PGS: MuJoCo Warp implements only the primal solvers (CG, Newton);
* integrator ``implicitfast`` by default instead of RK4: RK4 evaluates the dynamics four
  times per step, which makes the batched step about 4x slower, while implicitfast is as
  cheap as Euler and more stable with the model's joint damping; ``rk4`` stays selectable
  (:attr:`~vlmrm.envs.EnvConfig.warp_integrator`);
* single precision (Warp computes in float32; CPU MuJoCo in float64);
* the camera is a model camera (``mode="trackcom"`` on the tracked body) placed so that it
  sees exactly what MuJoCo's tracking ``MjvCamera`` of the paper sees (the Warp renderer
  draws model cameras only);
* the renderer is a ray tracer: no floor reflections (the paper's look has none), textures
  mapped per geom type (capsules get a cylindrical map instead of OpenGL's cube map).

Rewards, observations, resets and detectors follow gymnasium's ``HumanoidEnv`` exactly
(the weights and initial state are read from a constructed ``PaperHumanoidEnv``), including
its habit of reading body positions from the last sub-step's forward pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
import torch
from gymnasium.utils import seeding

from vlmrm.envs.humanoid import HumanoidPoseDetector, PaperHumanoidEnv, apply_paper_look
from vlmrm.envs.textures import robot_skin
from vlmrm.errors import ConfigError

__all__ = [
    "WARP_CAMERA_NAME",
    "BatchedPoseDetector",
    "WarpHumanoidSim",
    "adapt_look_to_ray_tracer",
    "add_view_camera",
    "build_warp_model",
]

# The camera vlmrm adds to the model for the Warp renderer.
WARP_CAMERA_NAME = "vlmrm_view"

_INTEGRATORS: dict[str, int] = {  # EnvConfig.warp_integrator -> MuJoCo's enum
    "implicitfast": int(mujoco.mjtIntegrator.mjINT_IMPLICITFAST),
    "euler": int(mujoco.mjtIntegrator.mjINT_EULER),
    "rk4": int(mujoco.mjtIntegrator.mjINT_RK4),
}


def _view_axes(elevation: float, azimuth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors of MuJoCo's abstract camera (angles in degrees)."""
    el, az = math.radians(elevation), math.radians(azimuth)
    forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return forward, right, np.cross(right, forward)


def add_view_camera(spec: mujoco.MjSpec, settings: Mapping[str, Any]) -> None:
    """Add a model camera to ``spec`` that reproduces MuJoCo's abstract camera ``settings``.

    MuJoCo's tracking camera looks at the tracked body's subtree centre of mass from
    ``distance`` along fixed ``elevation`` / ``azimuth`` angles; a ``trackcom`` model camera
    on that body, placed at that offset from the centre of mass in the model's initial pose,
    moves and points the same way. A free camera becomes a fixed world camera; a named or
    numbered model camera is rendered as it is. Field of view: the model's ``fovy`` (as the
    abstract camera's).

    Args:
        spec: the model being built (compiled here once to read the initial pose).
        settings: validated camera settings (see :data:`~vlmrm.envs.config.CAMERA_KEYS`).
    """
    kind = settings.get("type")
    if "name" in settings or "fixedcamid" in settings:
        return  # a model camera: rendered directly (see WarpHumanoidSim)
    if settings.get("orthographic"):
        raise ConfigError(
            "EnvConfig.camera['orthographic'] is not supported by backend='warp' for the "
            "tracking or free camera; remove it or use backend='mujoco'."
        )
    model = spec.compile()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    forward, right, up = _view_axes(
        float(settings.get("elevation", -45.0)), float(settings.get("azimuth", 90.0))
    )
    distance = float(settings.get("distance", model.stat.extent * 2.0))
    xyaxes = np.concatenate([right, up])
    if kind == "tracking" or (kind is None and "trackbodyid" in settings):
        body = int(settings.get("trackbodyid", 0))
        if not 0 <= body < model.nbody:
            raise ConfigError(
                f"camera trackbodyid={body} is out of range: the model has {model.nbody} bodies."
            )
        world_pos = data.subtree_com[body] - distance * forward
        body_rot = data.xmat[body].reshape(3, 3)
        # The camera's frame is given in the body's frame at the initial pose.
        local_pos = body_rot.T @ (world_pos - data.xpos[body])
        local_axes = (body_rot.T @ np.stack([right, up], axis=1)).T.reshape(-1)
        camera = spec.body(model.body(body).name).add_camera(
            name=WARP_CAMERA_NAME, mode=mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM
        )
        camera.pos = local_pos
        xyaxes = local_axes
    else:  # free camera: fixed in the world
        lookat = np.asarray(settings.get("lookat", model.stat.center), dtype=np.float64)
        camera = spec.worldbody.add_camera(name=WARP_CAMERA_NAME)
        camera.pos = lookat - distance * forward
    camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    camera.alt.xyaxes = xyaxes
    camera.fovy = float(model.vis.global_.fovy)


# The ray tracer lights surfaces more brightly than MuJoCo's OpenGL renderer does with the
# same lights (measured on the paper's frames: the floor clips to white, the robot is ~15%
# brighter); darkening the geoms' colours by these factors matches the mean brightness of
# floor and robot (tools/bench_warp.py --looks).
FLOOR_GREY = 0.70
ROBOT_GREY = 0.85


def adapt_look_to_ray_tracer(spec: mujoco.MjSpec) -> None:
    """Translate the paper's look (:func:`~vlmrm.envs.humanoid.apply_paper_look`) into the
    Warp renderer's terms, in place, so that its frames look like OpenGL's.

    * The Warp renderer multiplies a texture by the geom's colour where that colour is not
      MuJoCo's default; OpenGL shows the floor texture untinted (gymnasium's floor colour is
      pale green), so floor and robot get neutral greys that also compensate the ray
      tracer's brighter lighting (:data:`FLOOR_GREY`, :data:`ROBOT_GREY`).
    * The robot's texture is a cube map (the same image on six faces), which OpenGL samples by
      direction; the ray tracer maps textures per geom type (a capsule gets a cylindrical
      map), reading a cube map as a strip of six images (stripes along every limb). The robot
      gets the image once, as a 2D texture wrapped once around each geom.
    """
    spec.geom("floor").rgba = [FLOOR_GREY, FLOOR_GREY, FLOOR_GREY, 1.0]
    for geom in spec.geoms:
        if geom.name != "floor":
            geom.rgba = [ROBOT_GREY, ROBOT_GREY, ROBOT_GREY, 1.0]
    skin = robot_skin(128)
    texture = spec.texture("texgeom")
    texture.type = mujoco.mjtTexture.mjTEXTURE_2D
    texture.width, texture.height, texture.nchannel = skin.shape[1], skin.shape[0], 3
    texture.data = skin.tobytes()
    spec.material("geom").texuniform = False


def build_warp_model(
    gym_env: PaperHumanoidEnv, textured: bool, camera: Mapping[str, Any], integrator: str
) -> mujoco.MjModel:
    """The model of ``gym_env`` (same XML, same look) edited for MuJoCo Warp: Newton solver,
    the chosen integrator, and the view camera (:func:`add_view_camera`).

    The CPU humanoid with its ``model.opt`` set the same way simulates the same system, which
    is how the fidelity checks compare the two.
    """
    spec = mujoco.MjSpec.from_file(gym_env.fullpath)
    if textured:
        apply_paper_look(spec)
        adapt_look_to_ray_tracer(spec)
    spec.option.solver = mujoco.mjtSolver.mjSOL_NEWTON
    spec.option.integrator = _INTEGRATORS[integrator]
    add_view_camera(spec, camera)
    return spec.compile()


class BatchedPoseDetector:
    """:class:`~vlmrm.envs.humanoid.HumanoidPoseDetector`'s checks on N worlds at once, as
    torch operations on the worlds' body positions (same thresholds, same features).

    Args:
        model: the humanoid model (for body and geom ids).
    """

    def __init__(self, model: mujoco.MjModel) -> None:
        reference = HumanoidPoseDetector(model)
        self.torso, self.pelvis = reference._torso, reference._pelvis
        self.knees, self.feet = list(reference._knees), list(reference._feet)
        self.hands, self.head = list(reference._hands), reference._head
        self.tasks = tuple(reference.checks)
        self._reference = HumanoidPoseDetector

    def __call__(
        self, task: str, xpos: torch.Tensor, xmat: torch.Tensor, geom_xpos: torch.Tensor
    ) -> torch.Tensor:
        """Success of ``task`` per world: bool ``[N]``.

        Args:
            task: a key of ``HumanoidPoseDetector.checks``.
            xpos: body positions ``[N, nbody, 3]``.
            xmat: body orientations ``[N, nbody, 3, 3]``.
            geom_xpos: geom positions ``[N, ngeom, 3]``.
        """
        if task not in self.tasks:
            raise ConfigError(f"Unknown humanoid task {task!r}. Known tasks: {self.tasks}.")
        ref = self._reference
        rot = xmat[:, self.torso]  # [N, 3, 3]
        torso = xpos[:, self.torso]
        torso_z, upright = torso[:, 2], rot[:, 2, 2]
        head_z = geom_xpos[:, self.head, 2]
        pelvis = xpos[:, self.pelvis]
        knees = xpos[:, self.knees]  # [N, 2, 3] right, left
        feet = geom_xpos[:, self.feet]
        hands = geom_xpos[:, self.hands]
        hands_local = torch.matmul(hands - torso[:, None], rot)  # torso frame, [N, 2, 3]
        standing = (torso_z > ref.STANDING_TORSO_Z) & (upright > ref.UPRIGHT_COS)
        if task == "standing":
            return standing
        if task == "kneeling":
            knees_down = (knees[..., 2] < ref.FLOOR_CONTACT_Z).all(-1)
            pelvis_up = pelvis[:, 2] - knees[..., 2].amax(-1) > ref.KNEEL_PELVIS_ABOVE_KNEES
            return knees_down & pelvis_up & (upright > 0.7) & (torso_z > 0.6)
        knee_gap = torch.linalg.vector_norm(knees[:, 0, :2] - knees[:, 1, :2], dim=-1)
        feet_gap = torch.linalg.vector_norm(feet[:, 0, :2] - feet[:, 1, :2], dim=-1)
        if task == "lotus":
            return (
                (pelvis[:, 2] < 0.35)
                & (upright > 0.7)
                & (knees[..., 2] < 0.25).all(-1)
                & (knee_gap > 0.4)
                & (feet_gap < knee_gap)
            )
        if task == "arms_raised":
            return standing & (hands[..., 2] > head_z[:, None]).all(-1)
        if task == "splits":
            feet_down = (feet[..., 2] < ref.FLOOR_CONTACT_Z).all(-1)
            return (feet_gap > 1.2) & feet_down & (pelvis[:, 2] < 0.5)
        if task == "hands_on_hips":
            above = hands[..., 2] - pelvis[:, None, 2]
            near_hip_height = ((above > 0.0) & (above < 0.2)).all(-1)
            own_side = (hands_local[:, 0, 1] < -0.1) & (hands_local[:, 1, 1] > 0.1)
            reach = torch.linalg.vector_norm(hands[..., :2] - pelvis[:, None, :2], dim=-1)
            return standing & near_hip_height & own_side & (reach < 0.35).all(-1)
        if task == "arms_crossed":
            crossed = (hands_local[:, 0, 1] > 0.03) & (hands_local[:, 1, 1] < -0.03)
            in_front = (hands_local[..., 0] > 0.0).all(-1)
            chest = ((hands[..., 2] > pelvis[:, None, 2]) & (hands[..., 2] < head_z[:, None])).all(
                -1
            )
            return standing & crossed & in_front & chest
        # one_leg
        low = (feet[..., 2] < 0.15).sum(-1)
        high = (feet[..., 2] > 0.3).sum(-1)
        return standing & (low == 1) & (high == 1)


class WarpHumanoidSim:
    """N humanoid worlds in MuJoCo Warp, with gymnasium ``HumanoidEnv``'s step, reward,
    observation and reset, and the paper's frames.

    Tensors (on :attr:`device`): observation ``[N, 348]`` float32, reward ``[N]`` float32,
    frames ``[N, H, W, 3]`` uint8, success ``[N]`` bool, progress (torso height) ``[N]``. The
    state arrays (:attr:`qpos`, :attr:`xpos`, ...) are zero-copy views of Warp's arrays.

    Each piece of work (an env step of physics, a reset, a forward pass, a frame) is a fixed
    sequence of hundreds of kernel launches on fixed arrays; after :meth:`capture_graphs` it
    is replayed from a captured graph (a CUDA graph on a GPU, Warp's recorded operation stream
    on a CPU), which on a CPU takes one world's env step from ~100 ms of Python launch
    overhead to ~2 ms.

    Args:
        gym_env: a constructed :class:`~vlmrm.envs.humanoid.PaperHumanoidEnv` (the source of
            the model file, reward weights, initial state, frame skip and noise scale).
        model: the Warp-ready model (:func:`build_warp_model`).
        num_worlds: N.
        device: torch device (``cpu`` or ``cuda:K``).
        render_size: ``(height, width)``, or ``None`` for no renderer.
        shadows: ray-traced shadows.
        camera: the camera settings (for a named / numbered model camera).
        task: the pose whose detector fills ``success`` (``None``: always False).
    """

    def __init__(
        self,
        gym_env: PaperHumanoidEnv,
        model: mujoco.MjModel,
        num_worlds: int,
        device: torch.device,
        render_size: tuple[int, int] | None,
        shadows: bool = False,
        camera: Mapping[str, Any] | None = None,
        task: str | None = None,
    ) -> None:
        from vlmrm.envs.warp_runtime import import_warp, warp_device_name

        self.wp, self.mjw = wp, mjw = import_warp()
        self.device = device
        self.num_worlds = num_worlds
        self.model = model
        self.task = task
        self.frame_skip = int(gym_env.frame_skip)
        self.dt = float(model.opt.timestep) * self.frame_skip
        self.noise_scale = float(gym_env._reset_noise_scale)
        self.forward_weight = float(gym_env._forward_reward_weight)
        self.ctrl_weight = float(gym_env._ctrl_cost_weight)
        self.contact_weight = float(gym_env._contact_cost_weight)
        self.contact_range = tuple(float(v) for v in gym_env._contact_cost_range)
        self.healthy_bonus = float(gym_env._healthy_reward)
        self.healthy_z = tuple(float(v) for v in gym_env._healthy_z_range)
        self.init_qpos = np.asarray(gym_env.init_qpos, dtype=np.float64)
        self.init_qvel = np.asarray(gym_env.init_qvel, dtype=np.float64)
        self.detector = BatchedPoseDetector(model) if task is not None else None
        self.render_size = render_size
        self._rngs: list[np.random.Generator | None] = [None] * num_worlds
        self._graphs: dict[str, Any] = {}

        self._wp_device = warp_device_name(device)
        if device.type == "cuda":
            # Warp's kernels run on torch's current stream, so torch reads finished results.
            stream = wp.stream_from_torch(torch.cuda.current_stream(device))
            wp.set_stream(stream, device=self._wp_device)
        with wp.ScopedDevice(self._wp_device):
            self.m = mjw.put_model(model)
            self.d = d = mjw.make_data(model, nworld=num_worlds)
            self.rc = None
            if render_size is not None:
                self.rc = mjw.create_render_context(
                    model,
                    nworld=num_worlds,
                    cam_res=(render_size[1], render_size[0]),  # (width, height)
                    render_rgb=True,
                    render_depth=False,
                    render_seg=False,
                    use_shadows=shadows,
                    render_skybox=True,
                    cam_active=[_camera_id(model, camera or {})],
                    # Terms the model does not use (all zero) are compiled out.
                    enable_emission=bool(np.any(model.mat_emission)),
                    enable_per_light_ambient=bool(np.any(model.light_ambient)),
                )
            # Which worlds reset_data clears: written through its torch view before a reset.
            self._reset_mask = wp.zeros(num_worlds, dtype=wp.bool)
        t = wp.to_torch
        self.qpos, self.qvel, self.ctrl = t(d.qpos), t(d.qvel), t(d.ctrl)
        self.xpos, self.xmat, self.xipos = t(d.xpos), t(d.xmat), t(d.xipos)
        self.geom_xpos = t(d.geom_xpos)
        self.cinert, self.cvel, self.cfrc_ext = t(d.cinert), t(d.cvel), t(d.cfrc_ext)
        self.qfrc_actuator = t(d.qfrc_actuator)
        self._rgba = t(self.rc.rgb_data) if self.rc is not None else None
        self._reset_mask_view = t(self._reset_mask)
        mass = torch.as_tensor(model.body_mass, dtype=torch.float32, device=device)
        self._mass_fraction = (mass / mass.sum())[None, :, None]  # [1, nbody, 1]
        self._com_before = torch.zeros(num_worlds, 2, device=device)

    # --- the work, launch by launch or replayed from graphs --------------------------------

    def _physics(self) -> None:
        for _ in range(self.frame_skip):
            self.mjw.step(self.m, self.d)
        # As gymnasium: contact forces (cfrc_ext) are computed after the step.
        self.mjw.rne_postconstraint(self.m, self.d)

    def _reset_data(self) -> None:
        self.mjw.reset_data(self.m, self.d, reset=self._reset_mask)

    def _forward(self) -> None:
        self.mjw.forward(self.m, self.d)

    def _render(self) -> None:
        self.mjw.refit_bvh(self.m, self.d, self.rc)
        self.mjw.render(self.m, self.d, self.rc)

    def _run(self, name: str) -> None:
        """Run the work ``name`` (``physics``, ``reset_data``, ``forward``, ``render``)."""
        with self.wp.ScopedDevice(self._wp_device):
            graph = self._graphs.get(name)
            if graph is not None:
                self.wp.capture_launch(graph)
            else:
                getattr(self, f"_{name}")()

    def capture_graphs(self, render: bool = True) -> None:
        """Record every work as a graph, replayed from then on (recording runs nothing; Warp
        compiles or loads each kernel as it is recorded). Where capture fails (an older Warp
        or driver), the work keeps launching kernel by kernel.

        ``render=False`` leaves the frames to direct kernel launches (a few of them), which
        other threads may run at the same time: Warp replays a CPU graph through process-wide
        state, so two replays at once crash (:mod:`vlmrm.envs.warp_shards`)."""
        wp = self.wp
        names = ["physics", "reset_data", "forward"] + (["render"] if self.rc and render else [])
        graphs = {}
        try:
            with wp.ScopedDevice(self._wp_device):
                for name in names:
                    # Recording does not run the work; replaying the graph does.
                    with wp.ScopedCapture() as capture:
                        getattr(self, f"_{name}")()
                    graphs[name] = capture.graph
        except Exception as err:  # a slower path, not a failure
            warnings.warn(
                f"vlmrm: Warp graph capture failed ({err}); launching kernels one by one "
                "instead (slower).",
                stacklevel=2,
            )
            return
        self._graphs = graphs

    # --- state ---------------------------------------------------------------------------

    def seed(self, seeds: list[int]) -> None:
        """Give world ``i`` the random stream of a gymnasium env seeded ``seeds[i]``: the first
        reset draws the same initial state as ``PaperHumanoidEnv.reset(seed=seeds[i])``."""
        self._rngs = [seeding.np_random(int(s))[0] for s in seeds]

    def _mass_center(self) -> torch.Tensor:
        """Centre of mass (x, y) per world ``[N, 2]``, from the last forward pass (as
        gymnasium's ``mass_center``)."""
        return (self._mass_fraction * self.xipos).sum(1)[:, :2]

    def reset(self, worlds: torch.Tensor | None = None) -> None:
        """Start new episodes in ``worlds`` (bool ``[N]``; ``None``: all): gymnasium's
        ``reset_model`` (initial pose plus uniform noise from each world's own stream)."""
        if worlds is None:
            worlds = torch.ones(self.num_worlds, dtype=torch.bool, device=self.device)
        worlds = worlds.to(self.device, torch.bool)
        ids = worlds.nonzero().flatten().tolist()  # the only host sync: which worlds reset
        if not ids:
            return
        nq, nv, s = len(self.init_qpos), len(self.init_qvel), self.noise_scale
        qpos = np.tile(self.init_qpos, (self.num_worlds, 1))
        qvel = np.tile(self.init_qvel, (self.num_worlds, 1))
        for world in ids:
            rng = self._rngs[world]
            if rng is None:
                rng = self._rngs[world] = seeding.np_random(None)[0]
            qpos[world] += rng.uniform(low=-s, high=s, size=nq)
            qvel[world] += rng.uniform(low=-s, high=s, size=nv)
        self._write_state(
            worlds,
            torch.as_tensor(qpos, dtype=torch.float32, device=self.device),
            torch.as_tensor(qvel, dtype=torch.float32, device=self.device),
        )

    def set_state(self, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Put every world in the given state (``[N, nq]``, ``[N, nv]``) and run the forward
        pass (for comparisons with CPU MuJoCo)."""
        every = torch.ones(self.num_worlds, dtype=torch.bool, device=self.device)
        self._write_state(every, qpos.to(self.device), qvel.to(self.device))

    def _write_state(self, worlds: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Reset the data of ``worlds`` (bool ``[N]``), set their ``qpos`` / ``qvel`` rows and
        run the forward pass (of all worlds: MuJoCo Warp has no per-world forward), as
        gymnasium's ``reset`` + ``set_state``."""
        self._reset_mask_view.copy_(worlds)
        self._run("reset_data")
        self.qpos[worlds] = qpos[worlds]
        self.qvel[worlds] = qvel[worlds]
        self._run("forward")
        # gymnasium's reset observation: mj_forward computes no contact forces (cfrc_ext
        # stays as mj_resetData left it: zero).
        self.cfrc_ext[worlds] = 0.0
        self._com_before[worlds] = self._mass_center()[worlds]

    def step(self, action: torch.Tensor) -> torch.Tensor:
        """Advance every world by one env step (``frame_skip`` physics steps) under ``action``
        ``[N, 17]``; returns gymnasium's Humanoid reward ``[N]``."""
        self.ctrl.copy_(action)
        self._run("physics")
        com_after = self._mass_center()
        x_velocity = (com_after[:, 0] - self._com_before[:, 0]) / self.dt
        self._com_before = com_after
        height = self.qpos[:, 2]
        healthy = (height > self.healthy_z[0]) & (height < self.healthy_z[1])
        ctrl_cost = self.ctrl_weight * self.ctrl.square().sum(-1)
        contact_cost = (self.contact_weight * self.cfrc_ext.square().sum((-1, -2))).clamp(
            *self.contact_range
        )
        return (
            self.forward_weight * x_velocity
            + self.healthy_bonus * healthy.float()
            - ctrl_cost
            - contact_cost
        )

    # --- outputs -------------------------------------------------------------------------

    def observation(self) -> torch.Tensor:
        """gymnasium Humanoid-v5's observation ``[N, 348]`` float32: qpos[2:], qvel,
        cinert[1:], cvel[1:], qfrc_actuator[6:], cfrc_ext[1:]."""
        n = self.num_worlds
        return torch.cat(
            [
                self.qpos[:, 2:],
                self.qvel,
                self.cinert[:, 1:].reshape(n, -1),
                self.cvel[:, 1:].reshape(n, -1),
                self.qfrc_actuator[:, 6:],
                self.cfrc_ext[:, 1:].reshape(n, -1),
            ],
            dim=1,
        )

    def success(self) -> torch.Tensor:
        """The task's success per world, bool ``[N]`` (False without a task)."""
        if self.detector is None:
            return torch.zeros(self.num_worlds, dtype=torch.bool, device=self.device)
        return self.detector(self.task, self.xpos, self.xmat, self.geom_xpos)

    def progress(self) -> torch.Tensor:
        """Torso height ``[N]`` (the Humanoid's progress variable)."""
        return self.qpos[:, 2].clone()

    def render(self) -> torch.Tensor:
        """Ray-trace every world's frame: uint8 ``[N, H, W, 3]`` on :attr:`device` (a new
        tensor; the renderer's buffer is reused by the next call)."""
        if self.rc is None:
            raise RuntimeError("WarpHumanoidSim was built without a renderer (render_size=None).")
        self._run("render")
        height, width = self.render_size
        # Each pixel is one uint32 0xAARRGGBB: little-endian bytes B, G, R, A.
        bgra = self._rgba.view(torch.uint8).view(self.num_worlds, height, width, 4)
        return bgra[..., [2, 1, 0]]  # indexing copies: a fresh contiguous tensor


def _camera_id(model: mujoco.MjModel, settings: Mapping[str, Any]) -> int:
    """The model camera the renderer draws: vlmrm's view camera, or the one named/numbered."""
    if "name" in settings:
        cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, settings["name"])
        if cam < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise ConfigError(
                f"Camera name {settings['name']!r} is not in the model; cameras: {names}."
            )
        return cam
    if "fixedcamid" in settings:
        cam = int(settings["fixedcamid"])
        if not 0 <= cam < model.ncam:
            raise ConfigError(
                f"camera fixedcamid={cam} is out of range: the model has {model.ncam} camera(s)."
            )
        return cam
    return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, WARP_CAMERA_NAME)
