"""A synthetic chest/abdomen CT with organ masks and lesions: test and demo data.

The anatomy is defined in patient (LPS) millimetres, independent of the voxel grid: x grows to the
patient's left, y to the back, z to the head. It is rasterised by evaluating every shape at the
physical centre of every voxel, so any size, anisotropic spacing or oblique direction gives the
same body. Values are Hounsfield units of a late-arterial contrast CT (enhanced aorta, heart and
kidneys; liver ~70 HU). The seed varies the anatomy by a few millimetres, the texture, the noise
and where lesions go.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.segments import Segment, Segments, default_color, distinct_colors, write_segments
from ..io.volume import Volume, write_volume

ORGANS = ["body", "lung_left", "lung_right", "liver", "spleen", "kidney_left", "kidney_right",
          "spine", "aorta", "heart"]
DEFAULT_SIZE = (512, 512, 120)               # voxels (x, y, z)
FIELD_OF_VIEW_MM = (400.0, 400.0, 300.0)     # fixed (x, y, z); spacing = FOV / size
CENTER_LPS = (0.0, 0.0, -120.0)              # where the FOV centre sits in patient coordinates

# Nominal organ values (HU) and lesion values per organ (radius in mm).
ORGAN_HU = {"fat": -100, "muscle": 50, "lung": -860, "liver": 70, "spleen": 95, "kidney": 160,
            "heart_wall": 60, "blood": 210, "aorta": 230, "ivc": 70, "cancellous": 250,
            "cortical": 900, "disc": 80, "rib": 550, "bowel": 30, "stomach_fluid": 10}
LESIONS = {  # organ -> (HU, radius mm)
    "liver": (20, 12.0), "lung": (30, 8.0), "kidney": (10, 10.0), "spleen": (35, 10.0),
    "heart": (60, 8.0), "aorta": (60, 5.0), "spine": (80, 8.0), "body": (40, 10.0),
}
_ALIASES = {"lung": ("lung_left", "lung_right"), "kidney": ("kidney_left", "kidney_right")}
_NOISE_HU = 12.0


@dataclass
class PhantomCase:
    """A phantom CT (int16 HU), its organ segments, its lesion segments and a description."""

    ct: Volume
    organs: Segments
    lesions: Segments
    info: dict = field(default_factory=dict)


def make_phantom(seed: int = 0, size=None, lesions=None, oblique: bool = False,
                 lesion_scale: float = 1.0, progress=None) -> PhantomCase:
    """Make a synthetic CT with organ masks and lesions.

    ``size`` is voxels (x, y, z) over a fixed 400×400×300 mm field of view (default 512×512×120,
    i.e. ~0.78×0.78×2.5 mm). ``lesions`` lists organ names to put one spherical lesion in each
    (``None``: one in the liver; ``[]``: none; ``"lung"``/``"kidney"`` pick a side by seed).
    ``oblique`` tilts the voxel axes by a few degrees; the anatomy stays in patient coordinates.
    ``lesion_scale`` multiplies the nominal lesion radii (a lesion is shrunk to fit its organ if needed).
    ``progress``: called with a line per slab of slices (at most every ~5 s) and per phase.
    """
    if not lesion_scale > 0:
        raise InputError(f"lesion_scale must be a positive number, got {lesion_scale!r}")
    grid = _make_grid(size, oblique)
    seeds = np.random.SeedSequence(int(seed)).spawn(4)
    rng_anatomy, rng_texture, rng_noise, rng_lesion = (np.random.default_rng(s) for s in seeds)
    anatomy = _anatomy(rng_anatomy)
    textures = _Textures(rng_texture, grid)

    hu = np.empty(grid.shape, np.float32)
    labels = np.zeros(grid.shape, np.uint8)
    body = np.zeros(grid.shape, bool)
    # Slabs of z-slices keep the float work arrays small at 512×512×N.
    step = max(1, 2_000_000 // (grid.shape[1] * grid.shape[2]))
    say, said = progress or (lambda _m: None), time.time()
    for k0 in range(0, grid.shape[0], step):
        k1 = min(grid.shape[0], k0 + step)
        xyz = _physical_slab(grid, k0, k1)
        hu[k0:k1], labels[k0:k1], body[k0:k1] = _rasterise(anatomy, xyz, textures)
        if time.time() - said >= 5.0 or k1 == grid.shape[0]:  # 512×512×120 takes ~1 min on 2 cores
            say(f"  anatomy: slices {k1}/{grid.shape[0]}")
            said = time.time()

    organ_masks = {"body": body}
    for index, name in enumerate(ORGANS[1:], start=1):
        organ_masks[name] = labels == index

    requested = ["liver"] if lesions is None else [lesions] if isinstance(lesions, str) else list(lesions)
    say(f"  lesions ({', '.join(requested) or 'none'}) and noise")
    lesion_masks, lesion_info = _place_lesions(requested, grid, organ_masks, hu, rng_lesion, lesion_scale)
    for k0 in range(0, grid.shape[0], step):  # quantum noise last, over lesions too
        k1 = min(grid.shape[0], k0 + step)
        hu[k0:k1] += rng_noise.standard_normal(hu[k0:k1].shape, dtype=np.float32) * _NOISE_HU

    ct = grid.with_array(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
    colors = distinct_colors(list(ORGANS) + list(lesion_masks))
    organs = Segments([Segment(n, organ_masks[n], colors[n]) for n in ORGANS], grid)
    lesion_segments = Segments([Segment(n, m, colors.get(n, default_color(n, i)))
                                for i, (n, m) in enumerate(lesion_masks.items())], grid)
    info = {
        "seed": int(seed), "size_xyz": list(grid.size_xyz), "spacing_mm": list(grid.spacing),
        "origin_lps": list(grid.origin), "direction": grid.direction.tolist(), "oblique": bool(oblique),
        "field_of_view_mm": list(FIELD_OF_VIEW_MM), "phase": "late arterial (synthetic)",
        "organs": list(ORGANS), "organ_hu": dict(ORGAN_HU), "noise_hu": _NOISE_HU,
        "lesions": lesion_info,
    }
    return PhantomCase(ct, organs, lesion_segments, info)


def write_phantom_case(case: PhantomCase, out_dir, progress=None) -> dict:
    """Write ``ct.nrrd``, ``organs.seg.nrrd``, ``lesions.seg.nrrd`` and ``case.json`` into ``out_dir``
    (``progress``: called with each file's name before it is written)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _m: None)
    paths = {}
    for key, name, data, write in (("ct", "ct.nrrd", case.ct, write_volume),
                                   ("organs", "organs.seg.nrrd", case.organs, write_segments),
                                   ("lesions", "lesions.seg.nrrd", case.lesions, write_segments)):
        say(f"  writing {out / name}")
        paths[key] = write(data, out / name)
    paths["case"] = out / "case.json"
    paths["case"].write_text(json.dumps(case.info, indent=2) + "\n", encoding="utf-8")
    return paths


# ---- grid ---------------------------------------------------------------------------------------
def _make_grid(size, oblique: bool) -> Volume:
    size = DEFAULT_SIZE if size is None else tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 4:
        raise InputError(f"phantom size must be three voxel counts (x y z) of at least 4, got {size}")
    spacing = np.asarray(FIELD_OF_VIEW_MM) / np.asarray(size)
    direction = np.eye(3)
    if oblique:  # a few degrees about two axes, like a tilted gantry / oblique reformat
        a, b = np.deg2rad(8.0), np.deg2rad(5.0)
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        direction = rx @ ry
    half = direction @ (spacing * (np.asarray(size) - 1) / 2)
    origin = np.asarray(CENTER_LPS) - half
    return Volume(np.broadcast_to(np.zeros((), np.uint8), size[::-1]), tuple(spacing), tuple(origin), direction)


def _physical_slab(grid: Volume, k0: int, k1: int):
    """X, Y, Z (float32, (k1-k0, ny, nx)) relative to CENTER_LPS for slices k0..k1-1."""
    m = grid.direction @ np.diag(grid.spacing)
    nz, ny, nx = grid.shape
    i = np.arange(nx, dtype=np.float32)[None, None, :]
    j = np.arange(ny, dtype=np.float32)[None, :, None]
    k = np.arange(k0, k1, dtype=np.float32)[:, None, None]
    origin = np.asarray(grid.origin) - np.asarray(CENTER_LPS)
    return tuple((np.float32(origin[a]) + np.float32(m[a, 0]) * i + np.float32(m[a, 1]) * j
                  + np.float32(m[a, 2]) * k) for a in range(3))


# ---- anatomy ------------------------------------------------------------------------------------
def _anatomy(rng) -> dict:
    """Shape parameters in mm (relative to CENTER_LPS), varied a little by the seed."""
    def j(s):
        return float(rng.uniform(-s, s))

    scale = 1.0 + j(0.06)
    a = dict(
        body=(j(3), 10 + j(3), 160 * scale * (1 + j(0.03)), 115 * scale * (1 + j(0.03))),
        fat=14 + j(5), wall=10 + j(2),
        dome_right=35 + j(6), dome_left=25 + j(6),
        liver=((-55 + j(5), 0 + j(5), -15 + j(6)), (85 * (1 + j(0.08)), 85 * (1 + j(0.06)), 55 * (1 + j(0.08)))),
        spleen=((80 + j(4), 50 + j(4), -10 + j(6)), (26 * (1 + j(0.1)), 45 * (1 + j(0.1)), 48 * (1 + j(0.1)))),
        stomach=((45 + j(4), -30 + j(4), -5 + j(5)), (40 * (1 + j(0.1)), 33 * (1 + j(0.1)), 38 * (1 + j(0.1)))),
        kidney_left=((70 + j(4), 55 + j(3), -88 + j(6)), (28 * (1 + j(0.08)), 24 * (1 + j(0.08)), 55 * (1 + j(0.08)))),
        kidney_right=((-70 + j(4), 57 + j(3), -98 + j(6)), (28 * (1 + j(0.08)), 24 * (1 + j(0.08)), 55 * (1 + j(0.08)))),
        heart=((18 + j(4), -22 + j(4), 58 + j(5)), (55 * (1 + j(0.06)), 45 * (1 + j(0.06)), 42 * (1 + j(0.06)))),
        aorta=(15 + j(2), 22 + j(2), 12 + j(1.5)),
        ivc=(-24 + j(2), 26 + j(2), 11 + j(1.5)),
        vertebra=(0.0, 55 + j(2), 19 + j(1.5), 17 + j(1.5)),
        vertebra_period=30 + j(2), vertebra_phase=j(15),
        hilum=((-45, 20, 75), (45, 20, 75)),
    )
    a["mediastinum"] = 22 + j(3)
    return a


def _ellipsoid(X, Y, Z, center, semi):
    return (((X - center[0]) / semi[0]) ** 2 + ((Y - center[1]) / semi[1]) ** 2
            + ((Z - center[2]) / semi[2]) ** 2) <= 1.0


def _ellipse_r(X, Y, cx, cy, ax, by):
    """Normalised elliptic radius in the axial plane (1 on the ellipse)."""
    return np.sqrt(((X - cx) / ax) ** 2 + ((Y - cy) / by) ** 2)


def _rasterise(a, xyz, tex):
    """HU (float32), exclusive organ labels (uint8, index into ORGANS) and body mask for one slab."""
    X, Y, Z = xyz
    hu = np.full(X.shape, -1000.0, np.float32)
    labels = np.zeros(X.shape, np.uint8)
    t = tex.coarse(X, Y, Z)  # smooth texture, ~N(0, 1)
    L = {name: i for i, name in enumerate(ORGANS)}

    def paint(mask, value, label=None):
        hu[mask] = value if np.isscalar(value) else value[mask]
        if label is not None:
            labels[mask] = L[label] if label else 0

    bx, by, ba, bb = a["body"]
    r_body = _ellipse_r(X, Y, bx, by, ba, bb)
    body = (r_body <= 1.0) & (Y < by + 0.92 * bb)  # the back flattened on the table
    # Patient table under the back (outside the body), a board curved up at its sides.
    table = (np.abs(X - bx) < 0.8 * ba) & (Y > by + 0.92 * bb + 8 - 0.0008 * (X - bx) ** 2)
    hu[table & (Y < by + 0.92 * bb + 16 - 0.0008 * (X - bx) ** 2)] = 150.0
    paint(body, ORGAN_HU["fat"] + 8 * t)
    muscle_a, muscle_b = ba - a["fat"], bb - a["fat"]
    paint(_ellipse_r(X, Y, bx, by, muscle_a, muscle_b) <= 1.0, ORGAN_HU["muscle"] + 5 * t)
    cav_a, cav_b = muscle_a - a["wall"], muscle_b - a["wall"]
    r_cav = _ellipse_r(X, Y, bx, by, cav_a, cav_b)
    cavity = r_cav <= 1.0

    # Diaphragm: two domes, lower at the sides and back (costophrenic recesses).
    dome = np.where(X < 0,
                    a["dome_right"] - 30 * ((X + 60) / 90) ** 2 - 35 * ((Y - 5) / 90) ** 2,
                    a["dome_left"] - 30 * ((X - 60) / 90) ** 2 - 35 * ((Y - 5) / 90) ** 2)
    below = Z <= dome
    # Abdominal cavity: mesenteric fat with bowel loops (some with gas); mediastinal fat above.
    paint(cavity, -90 + 10 * t)
    bowel = cavity & below & (t > 0.35)
    paint(bowel, ORGAN_HU["bowel"] + 8 * t)
    gas = np.zeros(X.shape, bool)
    gas[bowel] = tex.fine(X[bowel], Y[bowel], Z[bowel], 0) > 1.5  # field 0 also makes lung vessels; no overlap
    paint(gas, -950.0)

    # Lungs: the chest cavity above the diaphragm, lateral to the mediastinum; parenchyma with
    # vessels (where two smooth random fields both cross zero: thin branching tubes) that
    # thicken toward the hila. Fine fields are sampled only where they are needed (speed).
    lung_zone = cavity & ~below & (np.abs(X - 0.15 * (Y + 60)) > a["mediastinum"]) & (Z < 175)
    lung_hu = np.full(X.shape, ORGAN_HU["lung"], np.float32)
    if lung_zone.any():
        x, y, z = X[lung_zone], Y[lung_zone], Z[lung_zone]
        d_hilum = np.minimum(*(np.sqrt((x - h[0]) ** 2 + (y - h[1]) ** 2 + (z - h[2]) ** 2)
                               for h in a["hilum"]))
        width = 0.14 + 0.4 * np.exp(-d_hilum / 45.0)
        vessel = (np.abs(tex.fine(x, y, z, 0)) < width) & (np.abs(tex.fine(x, y, z, 1)) < width)
        lung_hu[lung_zone] = np.where(vessel, 30.0, ORGAN_HU["lung"] + 25 * t[lung_zone])
    paint(lung_zone & (X >= 0), lung_hu, "lung_left")
    paint(lung_zone & (X < 0), lung_hu, "lung_right")

    # Abdominal organs below the diaphragm.
    liver = _ellipsoid(X, Y, Z, *a["liver"]) & below & cavity & (X < 35 - 0.2 * (Y + 40))
    liver_hu = ORGAN_HU["liver"] + 6 * t
    if liver.any():  # enhancing portal/hepatic vessel branches, part of the liver as segmentations have it
        x, y, z = X[liver], Y[liver], Z[liver]
        vessel = (np.abs(tex.fine(x, y, z, 0)) < 0.13) & (np.abs(tex.fine(x, y, z, 1)) < 0.13)
        liver_hu[liver] = np.where(vessel, 150.0, liver_hu[liver])
    paint(liver, liver_hu, "liver")
    stomach = _ellipsoid(X, Y, Z, *a["stomach"]) & below & cavity
    paint(stomach, ORGAN_HU["muscle"] + 4 * t)  # the wall
    sc, ss = a["stomach"]
    lumen = _ellipsoid(X, Y, Z, sc, tuple(s - 5 for s in ss)) & stomach
    paint(lumen, ORGAN_HU["stomach_fluid"] + 4 * t)
    paint(lumen & (Y < sc[1] - 0.35 * ss[1]), -980.0)  # air rises anteriorly in a supine patient
    spleen = _ellipsoid(X, Y, Z, *a["spleen"]) & below & cavity
    paint(spleen, ORGAN_HU["spleen"] + 6 * t, "spleen")
    # Psoas muscles beside the lumbar spine, growing toward the pelvis.
    grow = np.clip((-40.0 - Z) / 100.0, 0.0, 1.0)
    psoas_y = a["vertebra"][1] - 2
    for sign in (-1, 1):
        psoas = (((X - sign * (26 + 12 * grow)) / (8 + 10 * grow)) ** 2 + ((Y - psoas_y) / (9 + 7 * grow)) ** 2 <= 1)
        paint(psoas & (Z < -40) & cavity, ORGAN_HU["muscle"] + 5 * t, "")
    for side in ("kidney_left", "kidney_right"):
        center, semi = a[side]
        kidney = _ellipsoid(X, Y, Z, center, semi) & cavity
        paint(kidney, ORGAN_HU["kidney"] + 10 * t, side)
        # Renal sinus fat at the medial hilum (inside the kidney outline, as segmentations have it).
        sinus_c = (center[0] - np.sign(center[0]) * 0.55 * semi[0], center[1] - 3, center[2])
        paint(kidney & _ellipsoid(X, Y, Z, sinus_c, (0.45 * semi[0], 0.4 * semi[1], 0.45 * semi[2])),
              -70 + 10 * t)

    # Heart: myocardium around a contrast-filled blood pool, sitting on the diaphragm.
    hc, hs = a["heart"]
    heart = _ellipsoid(X, Y, Z, hc, hs) & cavity
    paint(heart, ORGAN_HU["heart_wall"] + 5 * t, "heart")
    chambers = heart & _ellipsoid(X, Y, Z, (hc[0] + 5, hc[1], hc[2]), tuple(0.72 * s for s in hs))
    # Interventricular septum: from anterior-left to posterior-right, right ventricle in front.
    septum = np.abs((X - hc[0] - 5) * 0.8 + (Y - hc[1]) * 0.6) < 4.0
    paint(chambers & ~septum, ORGAN_HU["blood"] + 8 * t)

    # Aorta: ascending in front, arch, descending anterior-left of the spine to the abdomen.
    ax_, ay_, ar = a["aorta"]
    top = hc[2] + 0.8 * hs[2]  # level of the aortic arch
    desc = (((X - ax_) ** 2 + (Y - ay_) ** 2) <= ar ** 2) & (Z < top)
    asc = (((X - 5) ** 2 + (Y + 25) ** 2) <= (ar + 2) ** 2) & (Z > hc[2]) & (Z < top)
    arch = _segment_distance(X, Y, Z, (5, -25, top), (ax_, ay_, top)) <= ar
    paint((desc | asc | arch) & cavity, ORGAN_HU["aorta"] + 8 * t, "aorta")
    # Trachea splitting into the main bronchi toward the hila, with a soft-tissue wall; esophagus
    # behind it; IVC to the right of the aorta (none of them segmented).
    carina = (0.0, 2.0, top - 10)
    hilum_z = a["hilum"][0][2]

    def airway(radius_trachea, radius_bronchus):
        tube = (((X - carina[0]) ** 2 + (Y - carina[1]) ** 2) <= radius_trachea ** 2) & (Z >= carina[2])
        for h in a["hilum"]:
            tube |= _segment_distance(X, Y, Z, carina, h) <= radius_bronchus
        return tube & cavity & (Z > hilum_z - 5)

    paint(airway(11.0, 8.0), 40 + 5 * t, "")
    paint(airway(9.0, 6.0), -990.0, "")
    eso = (((X + 4) ** 2 + (Y - 24) ** 2) <= 7.0 ** 2) & (Z > -25) & (Z < top + 20) & cavity & ~heart
    paint(eso, 40 + 5 * t, "")
    ix, iy, ir = a["ivc"]
    ivc = (((X - ix) ** 2 + (Y - iy) ** 2) <= ir ** 2) & (Z < hc[2] - 20) & cavity
    paint(ivc, ORGAN_HU["ivc"] + 5 * t, "")

    # Spine: paraspinal muscles, vertebral bodies (cortical shell, cancellous core) between
    # discs, spinal canal, posterior elements.
    vx, vy, va, vb = a["vertebra"]
    paint(body & ((_ellipse_r(X, Y, vx - 30, vy + 42, 22, 17) <= 1) | (_ellipse_r(X, Y, vx + 30, vy + 42, 22, 17) <= 1)),
          ORGAN_HU["muscle"] + 5 * t, "")
    phase = np.mod(Z - a["vertebra_phase"], a["vertebra_period"])
    disc = phase < 6.0
    r_vb = _ellipse_r(X, Y, vx, vy, va, vb)
    shell = 1.0 - max(2.5, tex.min_spacing) / min(va, vb)
    vb_bone = (r_vb <= 1) & ~disc
    paint((r_vb <= 1) & disc, ORGAN_HU["disc"] + 5 * t, "")
    paint(vb_bone, np.where(r_vb > shell, ORGAN_HU["cortical"], ORGAN_HU["cancellous"] + 30 * t), "spine")
    canal_y = vy + vb + 10
    r_canal = np.sqrt((X - vx) ** 2 + (Y - canal_y) ** 2)
    arch = (r_canal > 9) & (r_canal <= 15) & (Y > canal_y - 4)
    arch |= (np.abs(X - vx) < 4) & (Y > canal_y + 9) & (Y < canal_y + 32)       # spinous process
    arch |= (np.abs(X - vx) < 38) & (np.abs(Y - canal_y + 2) < 5) & (np.abs(X - vx) > 9)  # transverse
    arch &= body & (phase > 4.0)
    paint(arch, ORGAN_HU["cortical"] - 150 + 20 * t, "spine")
    paint(r_canal <= 9, 15 + 4 * t, "")

    # Ribs: oblique bands in the chest wall above the costal margin.
    rib_band = np.mod(Z + 0.35 * Y, 28.0) < 9.0
    ribs = rib_band & (r_cav > 1.0) & (r_cav < 1.0 + 9.0 / cav_a) & (Z > -40) & (np.abs(X) > 15)
    paint(ribs & body, ORGAN_HU["rib"] + 40 * t, "")

    return hu, labels, body


def _segment_distance(X, Y, Z, p, q):
    """Distance (mm) from each point to the line segment p-q."""
    p, q = np.asarray(p, np.float32), np.asarray(q, np.float32)
    d = q - p
    t = ((X - p[0]) * d[0] + (Y - p[1]) * d[1] + (Z - p[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((X - p[0] - t * d[0]) ** 2 + (Y - p[1] - t * d[1]) ** 2 + (Z - p[2] - t * d[2]) ** 2)


class _Textures:
    """Smooth random fields defined in physical space (so texture is grid independent)."""

    def __init__(self, rng, grid: Volume):
        self.min_spacing = float(min(grid.spacing))
        extent = np.asarray(FIELD_OF_VIEW_MM) / 2 * 1.25  # room for oblique grids
        self._lo = -extent
        self._coarse_step, self._fine_step = 6.0, 3.0
        self._coarse = self._field(rng, extent, self._coarse_step, sigma=1.0)
        # Fine fields only over the chest/abdomen centre, where lungs and bowel are.
        self._fine_lo = np.array([-150.0, -110.0, -160.0])
        fine_hi = np.array([150.0, 110.0, 200.0])
        shape = np.ceil((fine_hi - self._fine_lo) / self._fine_step).astype(int) + 1
        self._fine = [self._smooth(rng.standard_normal(shape[::-1], dtype=np.float32), 1.3) for _ in range(2)]

    def _field(self, rng, extent, step, sigma):
        shape = np.ceil(2 * extent / step).astype(int) + 1
        return self._smooth(rng.standard_normal(shape[::-1], dtype=np.float32), sigma)

    @staticmethod
    def _smooth(noise, sigma):
        f = ndimage.gaussian_filter(noise, sigma, mode="wrap", truncate=3.0)
        return (f - f.mean()) / (f.std() + 1e-6)

    @staticmethod
    def _sample(field, lo, step, X, Y, Z):
        coords = [(Z - lo[2]) / step, (Y - lo[1]) / step, (X - lo[0]) / step]
        return ndimage.map_coordinates(field, coords, order=1, mode="nearest").astype(np.float32)

    def coarse(self, X, Y, Z):
        return self._sample(self._coarse, self._lo, self._coarse_step, X, Y, Z)

    def fine(self, X, Y, Z, index):
        return self._sample(self._fine[index], self._fine_lo, self._fine_step, X, Y, Z)


# ---- lesions ------------------------------------------------------------------------------------
def _place_lesions(requested, grid: Volume, organ_masks: dict, hu: np.ndarray, rng, scale=1.0):
    """Spherical lesions fully inside their organs; paints ``hu`` in place; returns masks and info."""
    masks, info = {}, []
    placed = []  # (center_lps, radius) to keep lesions apart
    for organ in requested:
        organ = str(organ)
        if organ in _ALIASES:
            organ = _ALIASES[organ][int(rng.integers(2))]
        if organ not in organ_masks:
            raise InputError(f"cannot put a lesion in {organ!r}: the phantom's organs are "
                             f"{', '.join(ORGANS)} (or lung, kidney)")
        family = organ.split("_")[0]
        lesion_hu, radius = LESIONS.get(family, LESIONS["body"])
        radius = float(scale * radius * rng.uniform(0.8, 1.25))
        center, radius = _choose_center(grid, organ_masks[organ], radius, placed, rng, organ)
        placed.append((center, radius))
        name = f"lesion_{organ}"
        n = 2
        while name in masks:
            name, n = f"lesion_{organ}_{n}", n + 1
        box, inside, weight = _sphere(grid, center, radius)
        organ_box = organ_masks[organ][box]
        inside &= organ_box
        # The lesion replaces the organ's tissue (vessels included), keeping a little of its
        # texture; the soft edge imitates partial volume. The mask is the sphere itself.
        region = hu[box]
        organ_value = float(np.median(region[organ_box]))
        texture = np.clip(region - organ_value, -20.0, 20.0) * 0.3
        w = weight * organ_box
        hu[box] = (1 - w) * region + w * (lesion_hu + texture)
        mask = np.zeros(grid.shape, bool)
        mask[box] = inside
        masks[name] = mask
        info.append({"organ": organ, "name": name, "center_lps": [float(c) for c in center],
                     "radius_mm": round(radius, 3), "hu": float(lesion_hu), "voxels": int(mask.sum())})
    return masks, info


def _choose_center(grid: Volume, organ_mask, radius, placed, rng, organ):
    """A voxel centre deep enough in the organ for a sphere of ``radius`` (shrunk if none is)."""
    if not organ_mask.any():
        raise InputError(f"the phantom's {organ} is empty at this size; use a larger --size")
    box = ndimage.find_objects(organ_mask.astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    crop = organ_mask[box]
    # Distance (mm) from each organ voxel to the nearest non-organ voxel centre; a sphere of
    # radius r around a voxel with depth > r holds only organ voxels.
    depth = ndimage.distance_transform_edt(np.pad(crop, 1), sampling=grid.spacing[::-1])[1:-1, 1:-1, 1:-1]
    offset = np.array([s.start for s in box])
    idx = np.argwhere(crop).astype(np.int64)
    d = depth[crop]
    centers = grid.index_to_physical((idx + offset)[:, ::-1])
    ok = np.ones(len(idx), bool)
    for c, r in placed:
        ok &= np.linalg.norm(centers - c, axis=1) > r + 2.0
    margin = 0.5 * max(grid.spacing)
    r_try = radius
    while True:
        candidates = np.flatnonzero(ok & (d > r_try + margin))
        if len(candidates) or r_try <= 0.5 * min(grid.spacing):
            break
        r_try *= 0.8
    if not len(candidates):
        candidates = np.flatnonzero(ok) if ok.any() else np.arange(len(idx))
        candidates = candidates[np.argsort(d[candidates])[-1:]]
        r_try = max(float(d[candidates[0]]) - margin, 0.0)
    pick = candidates[int(rng.integers(len(candidates)))]
    return centers[pick], float(min(r_try, d[pick] - 1e-3))


def _sphere(grid: Volume, center, radius):
    """(box, inside, weight): index box around the sphere, voxel centres within ``radius`` of
    ``center`` in that box, and a soft partial-volume weight (1 inside, 0 outside, ramp at the edge)."""
    nz, ny, nx = grid.shape
    pad = radius + 2 * max(grid.spacing)
    # Bounding box in index space (any direction): the sphere's box corners mapped to indices.
    corners = np.array([[center[0] + sx * pad, center[1] + sy * pad, center[2] + sz * pad]
                        for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    ijk = grid.physical_to_index(corners)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, [nx - 1, ny - 1, nz - 1])
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 1, [nx, ny, nz])
    k, j, i = np.meshgrid(np.arange(lo[2], hi[2]), np.arange(lo[1], hi[1]), np.arange(lo[0], hi[0]), indexing="ij")
    pts = grid.index_to_physical(np.stack([i, j, k], axis=-1))
    dist = np.linalg.norm(pts - np.asarray(center), axis=-1)
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    edge = 0.5 * min(grid.spacing)
    weight = np.clip((radius - dist) / (2 * edge) + 0.5, 0.0, 1.0).astype(np.float32)
    return box, dist <= radius, weight
