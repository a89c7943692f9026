"""The paper's classic-control variants and a realistic MountainCar drawing.

* :class:`PaperCartPoleEnv`: no termination, pole angle wrapped to [-pi, pi], cart clipped to
  the track; success = inside the original termination thresholds.
* :class:`PaperMountainCarEnv`: continuous MountainCar whose goal is absorbing (the car stays
  at the flag); success once the flag is reached.
* :class:`MountainCarPainter`: draws MountainCar with a sky, a rocky snow-capped mountain, a car
  that looks like a car and a yellow flag, directly at the requested size.
"""

from __future__ import annotations

import math
import os

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.continuous_mountain_car import Continuous_MountainCarEnv
from PIL import Image, ImageDraw

from vlmrm.envs.textures import value_noise

# pygame (gymnasium's classic-control renderer) must not look for a display on headless hosts.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

__all__ = [
    "PENDULUM_SUCCESS_ANGLE",
    "MountainCarPainter",
    "PaperCartPoleEnv",
    "PaperMountainCarEnv",
    "pendulum_angle",
]

PENDULUM_SUCCESS_ANGLE = 0.1  # radians from upright


def pendulum_angle(theta: float) -> float:
    """Pendulum angle wrapped to [-pi, pi]; 0 is upright."""
    return float((theta + math.pi) % (2 * math.pi) - math.pi)


class PaperCartPoleEnv(CartPoleEnv):
    """CartPole without termination (fixed episode length set by a TimeLimit).

    After each physics step the pole angle is wrapped to [-pi, pi] (the pole may swing all the
    way round) and the cart is clipped to the track [-2.4, 2.4]; hitting the end of the track
    stops the cart (its velocity is zeroed, like an inelastic bumper). The reward is 1 while
    the pole and cart are inside the original termination thresholds (|theta| <= 12 deg,
    |x| <= 2.4), else 0: the original return, without the episode ending.

    Observation ``[4]`` float32 (x, x_dot, theta, theta_dot) inside ``observation_space``:
    x in [-2.4, 2.4], theta in [-pi, pi], velocities unbounded (gymnasium's CartPole declares
    |x| <= 4.8 and |theta| <= 0.42 rad, its termination thresholds doubled, which the pole
    leaves as soon as it falls). Action Discrete(2).
    """

    def __init__(self, render_mode: str | None = None, **kwargs) -> None:
        super().__init__(render_mode=render_mode, **kwargs)
        high = np.array([self.x_threshold, np.inf, math.pi, np.inf], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        self._confine()  # reset options may ask for a start outside the track or angle range
        return np.array(self.state, dtype=np.float32), {}

    def step(self, action: int):
        super().step(action)
        # The parent marks the episode terminated and warns on the next step; we never end.
        self.steps_beyond_terminated = None
        self._confine()
        reward = 1.0 if self.is_success() else 0.0
        return np.array(self.state, dtype=np.float32), reward, False, False, {}

    def _confine(self) -> None:
        """Wrap the pole angle to [-pi, pi]; stop the cart at the end of the track."""
        x, x_dot, theta, theta_dot = (float(v) for v in self.state)
        theta = pendulum_angle(theta)
        if abs(x) > self.x_threshold:
            x = math.copysign(self.x_threshold, x)
            x_dot = 0.0
        self.state = np.array((x, x_dot, theta, theta_dot), dtype=np.float64)

    def is_success(self) -> bool:
        """Pole and cart inside the original termination thresholds."""
        x, _, theta, _ = self.state
        return bool(abs(x) <= self.x_threshold and abs(theta) <= self.theta_threshold_radians)

    def progress(self) -> float:
        """The pole angle in radians (0 = upright)."""
        return float(self.state[2])


class PaperMountainCarEnv(Continuous_MountainCarEnv):
    """Continuous MountainCar whose goal is absorbing: the car stays at the flag until the
    episode's time limit, instead of the episode terminating.

    The step that reaches the goal earns gymnasium's +100 (minus the action cost); afterwards
    the state is frozen and the reward is 0, so returns equal the original env's. Observation
    ``[2]`` float32 (position, velocity); action ``[1]`` in [-1, 1].
    """

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._at_goal = False
        return super().reset(seed=seed, options=options)

    def step(self, action: np.ndarray):
        if self._at_goal:
            return np.array(self.state, dtype=np.float32), 0.0, False, False, {}
        obs, reward, reached, _, info = super().step(action)
        if reached:
            self._at_goal = True
            self.state = np.array([self.state[0], 0.0], dtype=np.float32)
            obs = np.array(self.state, dtype=np.float32)
        return obs, float(reward), False, False, info

    def is_success(self) -> bool:
        """The car has reached the flag (and, the goal being absorbing, stays there)."""
        return bool(self._at_goal)

    def progress(self) -> float:
        """The car's position along the track (the flag is at 0.45)."""
        return float(self.state[0])


class MountainCarPainter:
    """Draws a MountainCar state realistically at ``height x width``: uint8 ``[H, W, 3]``.

    The static scene (sky, distant range, rocky mountain with snow, yellow flag) is painted
    once; each frame pastes a rotated car sprite onto a copy of it. Geometry follows
    gymnasium's renderer (same world-to-screen mapping, stretched to the requested size), so
    the car sits where the stock renderer puts it.
    """

    def __init__(self, env: Continuous_MountainCarEnv, height: int, width: int) -> None:
        self.env = env
        self.height, self.width = height, width
        world_width = env.max_position - env.min_position
        native_scale = 600 / world_width  # gymnasium draws at 600x400
        self.sx = native_scale * width / 600
        self.sy = native_scale * height / 400
        self.clearance = 10 * height / 400
        self.background = self._paint_background()
        self.car = self._paint_car()

    def _to_screen(self, x: np.ndarray | float, y: np.ndarray | float):
        px = (np.asarray(x) - self.env.min_position) * self.sx
        py = self.height - (np.asarray(y) * self.sy + self.clearance)
        return px, py

    def _paint_background(self) -> Image.Image:
        h, w = self.height, self.width
        rng = np.random.default_rng(0)
        rows = np.linspace(0, 1, h)[:, None, None]
        top, horizon = np.array([70, 130, 210]), np.array([200, 225, 245])
        image = (top * (1 - rows) + horizon * rows).repeat(w, axis=1)

        # A hazy blue-grey range far away, for depth.
        cols = np.arange(w)
        ridge = 0.55 + 0.12 * np.sin(cols / w * 7.0 + 1.0) + 0.06 * np.sin(cols / w * 19.0)
        far_mask = np.arange(h)[:, None] > (ridge * h)[None, :]
        image[far_mask] = np.array([150, 170, 195])

        # The mountain the car climbs: earth and rock with grain, grass low, snow near the top.
        xs = np.linspace(self.env.min_position, self.env.max_position, w)
        _, surface = self._to_screen(xs, self.env._height(xs))
        below = np.arange(h)[:, None] >= surface[None, :]
        size = max(h, w)
        grain = value_noise(size, 24, rng)[:h, :w] + 0.5 * value_noise(size, 64, rng)[:h, :w]
        rock = np.array([118, 104, 88])[None, None, :] + 45 * (grain[..., None] - 0.75)
        world_y = (h - np.arange(h)[:, None] - self.clearance) / self.sy  # height per pixel row
        grass = np.array([84, 128, 60])[None, None, :] + 30 * (grain[..., None] - 0.75)
        snow = np.array([240, 242, 248])[None, None, :] + 12 * (grain[..., None] - 0.75)
        mix_grass = np.clip((0.45 - world_y) / 0.15, 0, 1)[..., None]
        mix_snow = np.clip((world_y - 0.8) / 0.06, 0, 1)[..., None]
        ground = rock * (1 - mix_grass) + grass * mix_grass
        ground = ground * (1 - mix_snow) + snow * mix_snow
        image = np.where(below[..., None], ground, image)
        canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))

        draw = ImageDraw.Draw(canvas)
        px, py = self._to_screen(xs, self.env._height(xs))
        line = [(float(a), float(b)) for a, b in zip(px, py, strict=True)]
        draw.line(line, fill=(80, 68, 56), width=max(1, round(3 * h / 400)))  # the trail

        # The yellow flag at the goal.
        fx, fy = self._to_screen(self.env.goal_position, self.env._height(self.env.goal_position))
        fx, fy = float(fx), float(fy)
        pole_h, flag_w, flag_h = 50 * h / 400, 28 * w / 600, 14 * h / 400
        draw.line([(fx, fy), (fx, fy - pole_h)], fill=(60, 60, 60), width=max(1, round(w / 300)))
        draw.polygon(
            [
                (fx, fy - pole_h),
                (fx + flag_w, fy - pole_h + flag_h / 2),
                (fx, fy - pole_h + flag_h),
            ],
            fill=(250, 210, 20),
            outline=(170, 130, 0),
        )
        return canvas

    def _paint_car(self) -> Image.Image:
        """A red hatchback, drawn at 4x and downsampled for clean edges (RGBA sprite)."""
        k = 4
        car_w, car_h = 40 * self.width / 600, 20 * self.height / 400
        w, h = max(8, round(car_w * k)), max(6, round(car_h * 1.6 * k))
        sprite = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        d = ImageDraw.Draw(sprite)
        wheel_r = h * 0.16
        body_top, body_bottom = h * 0.45, h - wheel_r * 1.1
        d.rounded_rectangle(
            [0, body_top, w - 1, body_bottom], radius=h * 0.1, fill=(200, 30, 35, 255)
        )
        d.polygon(  # cabin
            [(w * 0.22, body_top), (w * 0.32, h * 0.1), (w * 0.68, h * 0.1), (w * 0.82, body_top)],
            fill=(185, 25, 30, 255),
        )
        d.polygon(  # windows
            [
                (w * 0.27, body_top),
                (w * 0.35, h * 0.17),
                (w * 0.49, h * 0.17),
                (w * 0.49, body_top),
            ],
            fill=(170, 210, 235, 255),
        )
        d.polygon(
            [
                (w * 0.52, body_top),
                (w * 0.52, h * 0.17),
                (w * 0.66, h * 0.17),
                (w * 0.76, body_top),
            ],
            fill=(170, 210, 235, 255),
        )
        d.rectangle(  # headlight (at least one pixel wide on tiny sprites)
            [min(w * 0.9, w - 2), body_top + h * 0.05, w - 1, body_top + h * 0.13],
            fill=(255, 230, 120),
        )
        for cx in (w * 0.22, w * 0.78):
            cy = h - wheel_r - 1
            d.ellipse([cx - wheel_r, cy - wheel_r, cx + wheel_r, cy + wheel_r], fill=(25, 25, 25))
            r = wheel_r * 0.45
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(170, 170, 175))
        return sprite.resize((max(2, w // k), max(2, h // k)), Image.LANCZOS)

    def render(self, out: np.ndarray | None = None) -> np.ndarray:
        """Draw the env's current state: a new uint8 array ``[H, W, 3]`` (or into ``out``)."""
        pos = float(self.env.state[0])
        # Slope angle in screen space (x and y scales may differ when the aspect changes).
        slope = math.cos(3 * pos) * 0.45 * 3
        angle = math.degrees(math.atan2(slope * self.sy, self.sx))
        car = self.car.rotate(angle, resample=Image.BICUBIC, expand=True)
        px, py = self._to_screen(pos, self.env._height(pos))
        # Put the sprite's bottom centre (the wheels) on the track, lifted along the normal.
        lift = self.car.height / 2
        nx, ny = -math.sin(math.radians(angle)), -math.cos(math.radians(angle))
        cx, cy = float(px) + nx * lift, float(py) + ny * lift
        frame = self.background.copy()
        frame.paste(car, (round(cx - car.width / 2), round(cy - car.height / 2)), car)
        if out is not None:
            np.copyto(out, np.asarray(frame))
            return out
        return np.array(frame)

    def close(self) -> None:
        """Nothing to free (kept for the frame-source interface)."""
