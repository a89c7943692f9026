"""The paper's Humanoid: gymnasium mechanics, no unhealthy termination, optional realistic look,
and approximate programmatic success detectors for the paper's poses.

The success detectors stand in for the paper's human raters (paper Table 2). They read body
geometry from ``mujoco.MjData`` and are deliberately simple thresholds, so they are
*approximations* of the human criteria: use them for evaluation curves and reward-hacking
warnings, not as ground truth for a publication.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv

from vlmrm.envs.mujoco_render import ensure_offscreen_buffer
from vlmrm.envs.textures import floor_tiles, robot_skin
from vlmrm.errors import ConfigError

__all__ = ["HumanoidPoseDetector", "PaperHumanoidEnv", "apply_paper_look"]


def apply_paper_look(spec: mujoco.MjSpec) -> None:
    """Edit gymnasium's humanoid model into the paper's realistic look, in place.

    Sky-blue sky, stone-tiled floor without reflections, a brushed-metal robot and brighter
    light; the textures come from :mod:`vlmrm.envs.textures`, so no image files are shipped.
    """
    sky = next(t for t in spec.textures if t.type == mujoco.mjtTexture.mjTEXTURE_SKYBOX)
    sky.builtin = mujoco.mjtBuiltin.mjBUILTIN_GRADIENT
    sky.rgb1 = [0.35, 0.58, 0.9]  # zenith
    sky.rgb2 = [0.92, 0.95, 1.0]  # horizon haze
    sky.width, sky.height = 256, 256

    tiles = floor_tiles(512)
    floor_tex = spec.texture("texplane")
    floor_tex.builtin = mujoco.mjtBuiltin.mjBUILTIN_NONE
    floor_tex.width, floor_tex.height, floor_tex.nchannel = tiles.shape[1], tiles.shape[0], 3
    floor_tex.data = tiles.tobytes()
    floor_mat = spec.material("MatPlane")
    floor_mat.reflectance = 0.0  # the paper's look: no mirror floor
    floor_mat.texuniform = True
    floor_mat.texrepeat = [0.5, 0.5]  # one texture (4 x 4 tiles) per 2 m: 0.5 m tiles
    floor_mat.specular = 0.1
    floor_mat.shininess = 0.1

    skin = robot_skin(128)
    robot_tex = spec.texture("texgeom")
    robot_tex.builtin = mujoco.mjtBuiltin.mjBUILTIN_NONE
    robot_tex.width, robot_tex.height, robot_tex.nchannel = skin.shape[1], 6 * skin.shape[0], 3
    robot_tex.data = np.tile(skin, (6, 1, 1)).tobytes()  # the same image on all 6 cube faces
    robot_mat = spec.material("geom")
    robot_mat.specular = 0.5
    robot_mat.shininess = 0.5
    for geom in spec.geoms:
        if geom.name != "floor":
            # Geom colour multiplies the texture; white keeps the texture's own colours.
            geom.rgba = [1.0, 1.0, 1.0, 1.0]

    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.6, 0.6, 0.6]
    for light in spec.lights:
        light.diffuse = [1.0, 1.0, 1.0]
        light.specular = [0.2, 0.2, 0.2]


class PaperHumanoidEnv(HumanoidEnv):
    """Gymnasium ``Humanoid-v5`` with the paper's changes.

    * never terminates when unhealthy (the agent may kneel, sit or lie down);
    * ``textured=True`` compiles the model with :func:`apply_paper_look`;
    * the offscreen framebuffer is sized for ``render_height x render_width``.

    Observation ``[348]`` float64, action ``[17]`` in ``[-0.4, 0.4]``, reward: gymnasium's
    (forward velocity + healthy bonus - costs).

    Args:
        textured: use the paper's realistic look instead of the stock model.
        render_height: frame height the renderer will ask for.
        render_width: frame width the renderer will ask for.
        **kwargs: forwarded to ``HumanoidEnv`` (e.g. ``reset_noise_scale``).
    """

    def __init__(
        self,
        textured: bool = True,
        render_height: int = 480,
        render_width: int = 480,
        **kwargs,
    ) -> None:
        self._textured = textured
        self._render_size = (render_height, render_width)
        kwargs.setdefault("terminate_when_unhealthy", False)
        super().__init__(**kwargs)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        spec = mujoco.MjSpec.from_file(self.fullpath)
        if self._textured:
            apply_paper_look(spec)
        model = spec.compile()
        ensure_offscreen_buffer(model, *self._render_size)
        return model, mujoco.MjData(model)


@dataclass
class _Pose:
    """Body-geometry features in world (z) and torso-frame (x forward, y left) coordinates."""

    torso_z: float
    upright: float  # cosine between the torso's z axis and the world's z axis
    head_z: float
    pelvis: np.ndarray
    knees: np.ndarray  # [2, 3] right, left
    feet: np.ndarray  # [2, 3]
    hands: np.ndarray  # [2, 3]
    hands_local: np.ndarray  # [2, 3] hands in the torso frame


class HumanoidPoseDetector:
    """Approximate success checks for the paper's humanoid poses (heights in metres).

    The standing torso is at about 1.25-1.4 m, the knees at 0.5 m, the feet's sphere centres at
    0.075 m when on the floor. Each check is a conjunction of coarse thresholds on these
    heights and on distances between body parts; thresholds were chosen from the model's
    dimensions, not fitted to human labels.

    Args:
        model: a model compiled from gymnasium's ``humanoid.xml`` (stock or textured).
    """

    STANDING_TORSO_Z = 1.0  # gymnasium's own "healthy" lower bound
    UPRIGHT_COS = 0.8  # torso within ~37 degrees of vertical
    FLOOR_CONTACT_Z = 0.2  # a knee/foot centre this low is touching (or nearly) the floor
    KNEEL_PELVIS_ABOVE_KNEES = 0.25  # kneeling, not sitting: thighs well off the floor

    def __init__(self, model: mujoco.MjModel) -> None:
        body = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)  # noqa: E731
        geom = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)  # noqa: E731
        self._torso = body("torso")
        self._pelvis = body("pelvis")
        self._knees = [body("right_shin"), body("left_shin")]  # shin frames sit at the knees
        self._feet = [geom("right_foot"), geom("left_foot")]
        self._hands = [geom("right_hand"), geom("left_hand")]
        self._head = geom("head")
        self.checks = {
            "kneeling": self.kneeling,
            "lotus": self.lotus,
            "standing": self.standing,
            "arms_raised": self.arms_raised,
            "splits": self.splits,
            "hands_on_hips": self.hands_on_hips,
            "arms_crossed": self.arms_crossed,
            "one_leg": self.one_leg,
        }

    def features(self, data: mujoco.MjData) -> _Pose:
        """Read the body positions the checks need (no copies of large arrays)."""
        rot = data.xmat[self._torso].reshape(3, 3)
        torso = data.xpos[self._torso]
        hands = data.geom_xpos[self._hands]
        return _Pose(
            torso_z=float(torso[2]),
            upright=float(rot[2, 2]),
            head_z=float(data.geom_xpos[self._head][2]),
            pelvis=data.xpos[self._pelvis].copy(),
            knees=data.xpos[self._knees],
            feet=data.geom_xpos[self._feet],
            hands=hands,
            hands_local=(hands - torso) @ rot,
        )

    def __call__(self, task: str, data: mujoco.MjData) -> bool:
        """Whether ``data`` shows pose ``task`` (a key of :attr:`checks`)."""
        check = self.checks.get(task)
        if check is None:
            raise ConfigError(
                f"Unknown humanoid task {task!r}. Known tasks: {', '.join(self.checks)}."
            )
        return bool(check(self.features(data)))

    # --- the poses (paper Table 2, approximated) ---------------------------------------------

    def standing(self, p: _Pose) -> bool:
        """Torso high and upright: standing without falling."""
        return p.torso_z > self.STANDING_TORSO_Z and p.upright > self.UPRIGHT_COS

    def kneeling(self, p: _Pose) -> bool:
        """Both knees near the floor, torso upright and well above them (not sitting/lying)."""
        knees_down = bool(np.all(p.knees[:, 2] < self.FLOOR_CONTACT_Z))
        # Fix (pose library, vlmrm.checks.poses): the torso height alone also passed seated
        # poses whose knees are low, the lotus keyframes (sitting on the feet, knees spread)
        # and perturbed seated splits. Kneeling puts the weight on the knees: the pelvis stays
        # well above them (thighs at least ~40 degrees from the floor).
        pelvis_up = p.pelvis[2] - float(p.knees[:, 2].max()) > self.KNEEL_PELVIS_ABOVE_KNEES
        return knees_down and pelvis_up and p.upright > 0.7 and p.torso_z > 0.6

    def lotus(self, p: _Pose) -> bool:
        """Seated (pelvis low, torso upright), knees down and apart, feet tucked between them."""
        knee_gap = float(np.linalg.norm(p.knees[0, :2] - p.knees[1, :2]))
        feet_gap = float(np.linalg.norm(p.feet[0, :2] - p.feet[1, :2]))
        return (
            p.pelvis[2] < 0.35
            and p.upright > 0.7
            and bool(np.all(p.knees[:, 2] < 0.25))
            and knee_gap > 0.4
            and feet_gap < knee_gap
        )

    def arms_raised(self, p: _Pose) -> bool:
        """Standing with both hands above the head."""
        return self.standing(p) and bool(np.all(p.hands[:, 2] > p.head_z))

    def splits(self, p: _Pose) -> bool:
        """Feet far apart along the floor (> 1.2 m, legs ~0.9 m each) with the pelvis low."""
        feet_gap = float(np.linalg.norm(p.feet[0, :2] - p.feet[1, :2]))
        feet_down = bool(np.all(p.feet[:, 2] < self.FLOOR_CONTACT_Z))
        return feet_gap > 1.2 and feet_down and p.pelvis[2] < 0.5

    def hands_on_hips(self, p: _Pose) -> bool:
        """Standing, each hand at pelvis height on its own side, close to the body (not chest)."""
        # Fix (pose library): |hand - pelvis height| < 0.2 also passed arms hanging by the
        # sides (hands beside the thighs, 5-10 cm below the pelvis); hands on the hips rest on
        # top of them, at or above the pelvis centre.
        above_pelvis = p.hands[:, 2] - p.pelvis[2]
        near_hip_height = bool(np.all((above_pelvis > 0.0) & (above_pelvis < 0.2)))
        # Torso frame: y points to the robot's left, so the right hand must have y < 0.
        own_side = p.hands_local[0, 1] < -0.1 and p.hands_local[1, 1] > 0.1
        close = bool(np.all(np.linalg.norm(p.hands[:, :2] - p.pelvis[:2], axis=1) < 0.35))
        return self.standing(p) and near_hip_height and own_side and close

    def arms_crossed(self, p: _Pose) -> bool:
        """Standing, hands in front of the chest on the opposite sides (crossed, not touching)."""
        crossed = p.hands_local[0, 1] > 0.03 and p.hands_local[1, 1] < -0.03
        in_front = bool(np.all(p.hands_local[:, 0] > 0.0))
        chest_height = bool(np.all((p.hands[:, 2] > p.pelvis[2]) & (p.hands[:, 2] < p.head_z)))
        return self.standing(p) and crossed and in_front and chest_height

    def one_leg(self, p: _Pose) -> bool:
        """Standing with exactly one foot on the floor and the other clearly lifted."""
        low = p.feet[:, 2] < 0.15
        high = p.feet[:, 2] > 0.3
        return self.standing(p) and bool(low.sum() == 1 and high.sum() == 1)
