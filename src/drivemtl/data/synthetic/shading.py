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
    h = ix.astype(np.int64)
    h *= 73856093
    part = iy.astype(np.int64)
    part *= 19349663
    h ^= part
    part[...] = iz  # the same truncating cast as astype
    part *= 83492791
    h ^= part
    np.right_shift(h, 13, out=part)
    h ^= part
    h *= 1274126177
    np.right_shift(h, 16, out=part)
    h ^= part
    h &= 0xFFFF
    out = h.astype(np.float32)
    out /= np.float32(65536.0)
    return out


def _fade(period: np.ndarray | float, footprint: np.ndarray) -> np.ndarray:
    """Texture contrast kept for a pattern of `period` metres seen at `footprint` pixels per metre:
    none below 1.5 pixels per period (it would alias), full from 4 pixels."""
    return np.clip((period * footprint - 1.5) / 2.5, 0.0, 1.0).astype(np.float32)


# Value-noise octaves: (cell multiple, weight), weights ~ 1 / sqrt(scale) summing to 1. Several
# scales keep a surface textured at every distance: with the cell size alone, texture faded in
# (`_fade`) only within a few metres, so surfaces changed contrast from frame to frame as the
# camera approached and the far field was flat, which made an unsupervised photometric flow loss
# prefer zero flow over the true one (docs/video_tasks.md).
OCTAVES = ((1.0, 0.391), (2.0, 0.276), (4.0, 0.195), (8.0, 0.138))


def _octave_noise(
    local: tuple[np.ndarray, np.ndarray, np.ndarray], cell: np.ndarray, footprint: np.ndarray
) -> np.ndarray:
    """Sum over `OCTAVES` of weight x fade x (2 hash - 1) on lattices of cell x scale metres,
    in [-1, 1]; each octave's lattice is offset so that their cell corners do not coincide."""
    lx, ly, lz = local
    out = np.zeros(lx.shape, dtype=np.float32)
    for k, (scale, weight) in enumerate(OCTAVES):
        period = cell * np.float32(scale)
        offset = np.float32(0.37 * k)
        ix, iy, iz = lx / period + offset, ly / period + offset, lz / period + offset
        for lattice in (ix, iy, iz):
            np.floor(lattice, out=lattice)
        noise = _hash(ix, iy, iz)
        out += np.float32(weight) * _fade(period, footprint) * (2.0 * noise - 1.0)
    return out


def texture(
    local: tuple[np.ndarray, np.ndarray, np.ndarray],
    mats: np.ndarray,
    table: dict[str, np.ndarray],
    footprint: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Brightness factor and lit-window mask (same shape as `mats`) from surface-anchored
    coordinates (x, y, z arrays); `footprint` is the image size of one metre of surface (pixels),
    used to fade detail that would alias."""
    lx, ly, lz = local
    cell = table["cell"][mats]
    factor = 1.0 + table["noise"][mats] * _octave_noise(local, cell, footprint)
    lit = np.zeros(mats.shape, dtype=bool)
    for key, period in (("windows", 2.5), ("stripes", 0.35)):
        amp = table[key][mats]
        where = np.flatnonzero(amp > 0)
        if not len(where):
            continue
        along = lx.ravel()[where] + lz.ravel()[where]
        fa = along / period
        fa -= np.floor(fa)
        fade = _fade(period, footprint.ravel()[where])
        if key == "windows":
            y = ly.ravel()[where]
            fy = y / 3.2
            fy -= np.floor(fy)
            mark = (fa > 0.3) & (fa < 0.75) & (fy > 0.3) & (fy < 0.8)
            cells = _hash(np.floor(along / period), np.floor(y / 3.2), np.zeros_like(y))
            lit.ravel()[where] = mark & (cells > 0.55)
        else:
            mark = fa < 0.3
        factor.ravel()[where] *= 1.0 - amp.ravel()[where] * fade * mark
    return factor.astype(np.float32), lit


def sky_colour(up: np.ndarray, azimuth: np.ndarray | None, look: Look) -> list[np.ndarray]:
    """Sky colour channels (R, G, B) for view elevations `up` (sine of the angle above the
    horizon) and, for cloudy skies, azimuths."""
    t = np.sqrt(np.clip(up, 0.0, 1.0)).astype(np.float32)
    cloud = None
    if look.clouds and azimuth is not None:
        c = np.sin(azimuth * 9.0 + 1.3) * np.sin(up * 30.0) + 0.6 * np.sin(
            azimuth * 23.0 + up * 45.0
        )
        cloud = np.clip((c - 0.5) * 2.0, 0.0, 1.0).astype(np.float32)
    out = []
    for ch in range(3):
        top, horizon = np.float32(look.sky_top[ch]), np.float32(look.sky_horizon[ch])
        colour = horizon + (top - horizon) * t
        if cloud is not None:
            colour = colour * (1 - cloud) + np.float32(240.0) * cloud
        out.append(colour)
    return out


def weather_overlay(image: np.ndarray, look: Look, rng: np.random.Generator) -> None:
    """Draw rain streaks or snow flakes on a float RGB image in place."""
    h, w = image.shape[:2]
    if look.rain:
        count = max(8, w * h // 2500)
        x, y = rng.uniform(0, w, count), rng.uniform(0, h, count)
        length = rng.uniform(0.03, 0.08, count) * h
        ends = np.stack([x - 0.25 * length, y + length], axis=1)
        lines = np.stack([np.stack([x, y], axis=1), ends], axis=1).astype(np.int32)
        layer = np.zeros((h, w), np.uint8)
        cv2.polylines(layer, list(lines), False, 1, 1)
        _blend(image, layer, 0.35, 200.0)
    if look.snow:
        count = max(10, w * h // 1200)
        layer = np.zeros((h, w), np.uint8)
        layer[rng.integers(0, h, count), rng.integers(0, w, count)] = 1
        radius = max(1, w // 320)
        if radius > 1 or w >= 320:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            layer = cv2.dilate(layer, kernel)
        _blend(image, layer, 0.8, 245.0)


def _blend(image: np.ndarray, layer: np.ndarray, alpha: float, value: float) -> None:
    where = np.flatnonzero(layer)
    if len(where):
        flat = image.reshape(-1, 3)
        flat[where] = flat[where] * (1 - alpha) + alpha * value
