"""Appearance of a rendered frame: materials, procedural textures, lighting, sky, time of day and
weather (fog by depth, rain streaks, snow flakes), so that every tag changes the image visibly."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Look:
    """Lighting and atmosphere derived from the frame tags."""

    sun: np.ndarray  # direction towards the sun, world frame (y down)
    ambient: float
    diffuse: float
    gain: np.ndarray  # per-channel exposure * tint
    emissive: float
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    fog_colour: np.ndarray
    fog_distance: float
    clouds: bool
    rain: bool
    snow: bool


def make_look(tags: dict[str, str]) -> Look:
    """Lighting / sky / fog parameters for a (weather, scene, timeofday) triple."""
    weather, time, scene = tags["weather"], tags["timeofday"], tags["scene"]
    elevation = {"daytime": 0.9, "dawn/dusk": 0.12, "night": 0.5}[time]
    sun = np.array([0.5 * np.cos(elevation), -np.sin(elevation), 0.8 * np.cos(elevation)])
    sun /= np.linalg.norm(sun)
    ambient, diffuse = {
        "clear": (0.45, 0.75), "partly cloudy": (0.55, 0.5), "overcast": (0.8, 0.15),
        "rainy": (0.7, 0.1), "snowy": (0.8, 0.2), "foggy": (0.85, 0.1),
    }[weather]  # fmt: skip
    top, horizon = {
        "clear": ((60, 120, 215), (165, 200, 240)), "partly cloudy": ((75, 135, 215), (175, 205, 235)),
        "overcast": ((150, 153, 158), (190, 192, 195)), "rainy": ((90, 95, 103), (128, 132, 138)),
        "snowy": ((180, 182, 190), (218, 218, 224)), "foggy": ((200, 200, 200), (205, 205, 205)),
    }[weather]  # fmt: skip
    top, horizon = np.array(top, np.float32), np.array(horizon, np.float32)
    gain = np.ones(3, np.float32)
    emissive = 0.1
    if time == "dawn/dusk":
        gain = np.array([1.0, 0.72, 0.55], np.float32) * 0.8
        top = top * 0.4 + np.array([40, 40, 90], np.float32)
        horizon = horizon * 0.3 + np.array([190, 110, 60], np.float32)
        emissive = 0.6
        diffuse *= 0.6
    elif time == "night":
        gain = np.array([0.6, 0.7, 0.95], np.float32) * 0.28
        top = np.array([4, 6, 16], np.float32)
        horizon = np.array([20, 24, 40], np.float32)
        emissive, diffuse = 1.0, 0.0
    if scene == "tunnel":
        gain = gain * np.array([1.05, 0.85, 0.55], np.float32) * 0.75
        emissive = max(emissive, 0.8)
        diffuse = 0.0
    fog_distance = {"foggy": 28.0, "rainy": 160.0, "snowy": 90.0}.get(weather, 700.0)
    fog_colour = (horizon * 0.6 + 80).astype(np.float32) if weather == "foggy" else horizon * 0.9
    if weather == "foggy":
        top = horizon = fog_colour
    return Look(
        sun,
        ambient,
        diffuse,
        gain,
        emissive,
        top,
        horizon,
        fog_colour,
        fog_distance,
        weather == "partly cloudy",
        weather == "rainy",
        weather == "snowy",
    )


def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Integer lattice -> pseudo-random values in [0, 1)."""
    h = (
        (ix.astype(np.int64) * 73856093)
        ^ (iy.astype(np.int64) * 19349663)
        ^ (iz.astype(np.int64) * 83492791)
    )
    h = (h ^ (h >> 13)) * 1274126177
    h ^= h >> 16
    return (h & 0xFFFF).astype(np.float32) / np.float32(65536.0)


def _fade(period: np.ndarray | float, footprint: np.ndarray) -> np.ndarray:
    """Texture contrast kept for a pattern of `period` metres seen at `footprint` pixels per metre:
    none below 1.5 pixels per period (it would alias), full from 4 pixels."""
    return np.clip((period * footprint - 1.5) / 2.5, 0.0, 1.0).astype(np.float32)


def texture(
    local: np.ndarray, mats: np.ndarray, table: dict[str, np.ndarray], footprint: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Brightness factor [N] and lit-window mask [N] from surface-anchored coordinates [N, 3];
    `footprint` [N] is the image size of one metre of surface (pixels), to fade aliasing detail."""
    cell = table["cell"][mats]
    q = np.floor(local / cell[:, None]).astype(np.int64)
    noise = _hash(q[:, 0], q[:, 1], q[:, 2])
    factor = 1.0 + table["noise"][mats] * _fade(cell, footprint) * (2.0 * noise - 1.0)
    along = local[:, 0] + local[:, 2]
    win_amp = table["windows"][mats]
    lit = np.zeros(len(mats), dtype=bool)
    has_windows = win_amp > 0
    if has_windows.any():
        a = along[has_windows]
        y = local[has_windows, 1]
        fa = np.mod(a / 2.5, 1.0)
        fy = np.mod(y / 3.2, 1.0)
        window = (fa > 0.3) & (fa < 0.75) & (fy > 0.3) & (fy < 0.8)
        fade = _fade(2.5, footprint[has_windows])
        factor[has_windows] *= 1.0 - win_amp[has_windows] * fade * window
        cells = _hash(np.floor(a / 2.5), np.floor(y / 3.2), np.zeros_like(a))
        lit[has_windows] = window & (cells > 0.55)
    stripe_amp = table["stripes"][mats]
    has_stripes = stripe_amp > 0
    if has_stripes.any():
        stripe = np.mod(along[has_stripes] / 0.35, 1.0) < 0.3
        fade = _fade(0.35, footprint[has_stripes])
        factor[has_stripes] *= 1.0 - stripe_amp[has_stripes] * fade * stripe
    return factor.astype(np.float32), lit


def sky_colour(directions: np.ndarray, look: Look) -> np.ndarray:
    """Sky colour [N, 3] for unit world-frame view directions [N, 3] (y down)."""
    up = np.clip(-directions[:, 1], 0.0, 1.0).astype(np.float32)
    t = np.sqrt(up)[:, None]
    colour = look.sky_horizon[None] * (1 - t) + look.sky_top[None] * t
    if look.clouds:
        az = np.arctan2(directions[:, 0], directions[:, 2])
        c = np.sin(az * 9.0 + 1.3) * np.sin(up * 30.0) + 0.6 * np.sin(az * 23.0 + up * 45.0)
        cloud = np.clip((c - 0.5) * 2.0, 0.0, 1.0).astype(np.float32)[:, None]
        colour = colour * (1 - cloud) + np.float32(240.0) * cloud
    return colour


def weather_overlay(image: np.ndarray, look: Look, rng: np.random.Generator) -> None:
    """Draw rain streaks or snow flakes on a float RGB image in place."""
    h, w = image.shape[:2]
    if look.rain:
        layer = np.zeros((h, w), np.float32)
        for _ in range(max(8, w * h // 2500)):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            length = rng.uniform(0.03, 0.08) * h
            cv2.line(layer, (int(x), int(y)), (int(x - 0.25 * length), int(y + length)), 1.0, 1)
        image *= 1 - 0.35 * layer[..., None]
        image += 0.35 * 200 * layer[..., None]
    if look.snow:
        layer = np.zeros((h, w), np.float32)
        radius = max(1, w // 320)
        for _ in range(max(10, w * h // 1200)):
            cv2.circle(layer, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), radius, 1.0, -1)
        image *= 1 - 0.8 * layer[..., None]
        image += 0.8 * 245 * layer[..., None]
