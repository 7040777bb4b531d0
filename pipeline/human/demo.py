"""``make-demo-human``: a small person-video dataset in the layouts ``render-human`` reads.

The "person" is a drawn articulated figure (2-D forward kinematics of a BODY_25 skeleton with
two 21-joint hands: torso, swinging arms and legs, a head, fingers) that walks across the frame
while waving, so the demo needs nothing licensed and no network. Its keypoints are exactly the
joints it was drawn from, written per frame in OpenPose's JSON format. Three videos:

* ``dancer_a/``: TikTok layout, ``images/*.png`` + ``masks/*.png`` + ``openpose/`` (BODY_25);
* ``dancer_b/``: TikTok layout, no masks, keypoints as COCO-18 (what older OpenPose / DWPose write);
* ``walker.mp4`` (H.264 through imageio-ffmpeg) + ``walker_openpose/`` (BODY_25) + camera intrinsics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.human.keypoints import LEFT_HAND, N_BODY, RIGHT_HAND, write_openpose_json
from schemas.store import BODY_25_NAMES, N_HUMAN_KEYPOINTS

J = {n: i for i, n in enumerate(BODY_25_NAMES)}
SIZE = (192, 256)  # W, H: portrait, like phone videos


def _unit(a: float) -> np.ndarray:
    """Direction at angle a from straight down (image y down), positive = toward +x."""
    return np.array([np.sin(a), np.cos(a)])


def _hand(wrist: np.ndarray, elbow: np.ndarray, side: float, scale: float) -> np.ndarray:
    """21 hand joints [21, 2] (OpenPose order) fanned out along the forearm direction."""
    d = wrist - elbow
    d = d / (np.linalg.norm(d) + 1e-9)
    n = np.array([-d[1], d[0]]) * side
    out = [wrist]
    for f, spread in enumerate((-1.3, -0.55, 0.0, 0.5, 1.0)):  # thumb .. pinky
        base = wrist + d * scale * (0.35 if f == 0 else 0.8) + n * scale * 0.22 * spread
        fd = d + n * (0.5 * spread if f else -0.8)
        fd = fd / np.linalg.norm(fd)
        seg = scale * (0.28 if f == 0 else 0.25)
        out += [base + fd * seg * k for k in range(4)]
    return np.array(out)


def figure_keypoints(t: float, width: int, height: int) -> np.ndarray:
    """float64 [67, 3] keypoints (OpenCV pixels, confidence 0.9) of the figure at phase t in [0, 1]."""
    u = height / 256
    phase = 2 * np.pi * 2 * t
    hip = np.array([width * (0.4 + 0.2 * t), 150 * u + 3 * u * np.sin(2 * phase)])
    neck = hip + np.array([4 * u * np.sin(phase), -62 * u])
    p = np.zeros((N_BODY, 2))
    p[J["MidHip"]], p[J["Neck"]] = hip, neck
    p[J["RShoulder"]], p[J["LShoulder"]] = neck + [-20 * u, 2 * u], neck + [20 * u, 2 * u]
    p[J["RHip"]], p[J["LHip"]] = hip + [-11 * u, 0], hip + [11 * u, 0]
    for side, name, off in ((-1, "R", 0.0), (1, "L", np.pi)):
        a = side * (0.3 + 0.9 * (0.5 + 0.5 * np.sin(phase + off)))     # shoulder: waving outward
        elbow = p[J[f"{name}Shoulder"]] + _unit(a) * 30 * u
        wrist = elbow + _unit(a + side * (0.6 + 0.5 * np.sin(phase * 1.5 + off))) * 27 * u
        p[J[f"{name}Elbow"]], p[J[f"{name}Wrist"]] = elbow, wrist
        th = 0.35 * np.sin(phase + off)                                   # legs: stepping
        knee = p[J[f"{name}Hip"]] + _unit(th) * 40 * u
        ankle = knee + _unit(th - 0.3 * (1 + np.sin(phase + off))) * 40 * u
        p[J[f"{name}Knee"]], p[J[f"{name}Ankle"]] = knee, ankle
        p[J[f"{name}Heel"]] = ankle + [-2 * u * side, 5 * u]
        p[J[f"{name}BigToe"]] = ankle + [8 * u * side, 7 * u]
        p[J[f"{name}SmallToe"]] = ankle + [12 * u * side, 6 * u]
    head = neck + np.array([0, -22 * u])
    p[J["Nose"]] = head + [0, 2 * u]
    p[J["REye"]], p[J["LEye"]] = head + [-5 * u, -3 * u], head + [5 * u, -3 * u]
    p[J["REar"]], p[J["LEar"]] = head + [-10 * u, -1 * u], head + [10 * u, -1 * u]
    kp = np.zeros((N_HUMAN_KEYPOINTS, 3))
    kp[:N_BODY, :2] = p
    kp[LEFT_HAND, :2] = _hand(p[J["LWrist"]], p[J["LElbow"]], 1.0, 14 * u)
    kp[RIGHT_HAND, :2] = _hand(p[J["RWrist"]], p[J["RElbow"]], -1.0, 14 * u)
    kp[:, 2] = 0.9
    return kp


def draw_figure(kp: np.ndarray, background: np.ndarray, shirt=(200, 40, 50)) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [H, W, 3] frame, bool [H, W] person mask): the figure drawn over ``background``."""
    H, W = background.shape[:2]
    u = H / 256
    img = Image.fromarray(background.copy())
    mask = Image.new("L", (W, H), 0)
    skin, trousers = (230, 185, 150), (40, 60, 130)
    p = {n: tuple(kp[i, :2]) for n, i in J.items()}

    def limb(a, b, width, col):
        for im, c in ((img, col), (mask, 255)):
            d = ImageDraw.Draw(im)
            d.line([a, b], fill=c, width=int(width))
            r = width / 2
            for q in (a, b):
                d.ellipse([q[0] - r, q[1] - r, q[0] + r, q[1] + r], fill=c)

    for s in "RL":
        limb(p[f"{s}Hip"], p[f"{s}Knee"], 13 * u, trousers)
        limb(p[f"{s}Knee"], p[f"{s}Ankle"], 11 * u, trousers)
        limb(p[f"{s}Heel"], p[f"{s}BigToe"], 6 * u, (30, 30, 30))
    torso = [p["RShoulder"], p["LShoulder"], p["LHip"], p["RHip"]]
    for im, c in ((img, shirt), (mask, 255)):
        ImageDraw.Draw(im).polygon(torso, fill=c)
    limb(p["Neck"], p["Nose"], 9 * u, skin)
    hx, hy = kp[J["Nose"], :2] + [0, -4 * u]
    for im, c in ((img, skin), (mask, 255)):
        ImageDraw.Draw(im).ellipse([hx - 11 * u, hy - 13 * u, hx + 11 * u, hy + 12 * u], fill=c)
    for s in "RL":
        limb(p[f"{s}Shoulder"], p[f"{s}Elbow"], 10 * u, shirt)
        limb(p[f"{s}Elbow"], p[f"{s}Wrist"], 8 * u, skin)
    for hand in (LEFT_HAND, RIGHT_HAND):
        h = kp[hand, :2]
        for f in range(5):
            chain = [h[0]] + [h[1 + 4 * f + k] for k in range(4)]
            for a, b in zip(chain[:-1], chain[1:], strict=True):
                limb(tuple(a), tuple(b), 2.5 * u, skin)
    return np.asarray(img), np.asarray(mask) > 127


def room(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A plain room: wall gradient, floor, a couple of coloured panels."""
    y = np.linspace(0, 1, height)[:, None, None]
    wall = np.array(rng.uniform(150, 220, 3)) * (1 - 0.25 * y)
    img = np.broadcast_to(wall, (height, width, 3)).copy()
    img[int(height * 0.72):] = rng.uniform(80, 130, 3)
    for _ in range(3):
        x0, y0 = rng.integers(0, width - 30), rng.integers(10, int(height * 0.5))
        img[y0:y0 + rng.integers(15, 40), x0:x0 + rng.integers(15, 40)] = rng.uniform(40, 240, 3)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def make_demo(out: Path, frames: int = 24, seed: int = 0) -> list[str]:
    """Write the three demo videos (see module doc) under ``out``; returns their names."""
    out = Path(out)
    W, H = SIZE
    rng = np.random.default_rng(seed)
    plan = [("dancer_a", "folder", "BODY_25", True, (200, 40, 50)),
            ("dancer_b", "folder", "COCO", False, (40, 150, 60)),
            ("walker", "mp4", "BODY_25", False, (230, 160, 30))]
    for v, (name, kind, model, with_masks, shirt) in enumerate(plan):
        bg = room(W, H, rng)
        if kind == "folder":
            (out / name / "images").mkdir(parents=True)
            (out / name / "openpose").mkdir()
            if with_masks:
                (out / name / "masks").mkdir()
            kp_dir = out / name / "openpose"
        else:
            kp_dir = out / f"{name}_openpose"
            kp_dir.mkdir(parents=True)
        video = []
        for i in range(frames):
            kp = figure_keypoints((i + 0.5 * v) / max(frames, 1), W, H)
            frame, mask = draw_figure(kp, bg, shirt)
            write_openpose_json(kp_dir / f"{name}_{i:012d}_keypoints.json", [kp], model)
            if kind == "folder":
                Image.fromarray(frame).save(out / name / "images" / f"{i:04d}.png")
                if with_masks:
                    Image.fromarray((mask * 255).astype(np.uint8)).save(out / name / "masks" / f"{i:04d}.png")
            else:
                video.append(frame)
        if kind == "mp4":
            import imageio.v2 as imageio

            with imageio.get_writer(out / f"{name}.mp4", fps=10, codec="libx264", quality=9,
                                    macro_block_size=1) as w:
                for f in video:
                    w.append_data(f)
            K = [[200.0, 0.0, W / 2 - 0.5], [0.0, 200.0, H / 2 - 0.5], [0.0, 0.0, 1.0]]
            (out / f"{name}.intrinsics.json").write_text(json.dumps({"K": K}))
    return [p[0] for p in plan]
