"""Synthetic macular OCT volumes that look like the real thing.

No OCT data ships in any package, so tests and demos use volumes generated here. Each volume is
built from anatomy, not from image noise: per-A-scan depths of every retinal boundary (ILM, NFL,
GCL, IPL, INL, OPL, ONL, ELM, ellipsoid zone, outer segments, interdigitation zone, RPE, Bruch's
membrane) and of the choroid, with a foveal pit, a curved and tilted globe, retinal vessels that
shadow the tissue beneath them, and optional pathology (drusen, intraretinal fluid, thinning).
The same boundaries give a voxel segmentation (:data:`SEGMENTATION_CLASSES`), so dense probes
have exact ground truth.

Intensities are handled in the display (log) domain, as OCT devices show them: each boundary adds
a step to the A-scan profile, depth attenuation adds slopes, and speckle - multiplicative in linear
intensity - becomes additive log-gamma noise. Steps and slopes are scattered as first and second
differences along depth and integrated with one running sum, so the cost per voxel is a few
additions regardless of the number of layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmtrain.data.synthetic.oct_devices import OCTDevice
from fmtrain.data.synthetic.oct_segmentation import SEGMENTATION_CLASSES, label_bands

__all__ = ["PATHOLOGIES", "SEGMENTATION_CLASSES", "SyntheticOCT", "synthesize_oct"]

PATHOLOGIES = ("normal", "drusen", "fluid", "thinning")

# Display level (0-255, log scale) of each band from the ILM down to Bruch's membrane, before
# depth attenuation and speckle. Relative brightness follows clinical OCT: RPE brightest, NFL and
# ellipsoid zone bright, plexiform layers medium, nuclear layers dark.
_RETINA_LEVELS = {
    "nfl": 196.0,
    "gcl": 124.0,
    "ipl": 148.0,
    "inl": 88.0,
    "opl": 140.0,
    "onl": 72.0,
    "elm": 124.0,
    "myoid": 88.0,
    "ez": 210.0,
    "os": 104.0,
    "iz": 168.0,
    "rpe": 234.0,
    "druse": 138.0,
    "bm": 180.0,
}
_CHORIOCAPILLARIS_LEVEL = 170.0
_CHOROID_LEVEL = 150.0
_SCLERA_LEVEL = 70.0
_NOISE_FLOOR = 8.0
_FLUID_LEVEL = 16.0
# 45 dB of dynamic range mapped onto 0-255, as devices export it; converts speckle (natural log
# of intensity) into display units.
_DISPLAY_UNITS_PER_NEPER = 255.0 / 45.0 * 10.0 / np.log(10.0)
# Frames are rendered in chunks of about this many voxels to bound memory (a full-resolution
# Triton volume has 130 M voxels).
_CHUNK_VOXELS = 4_000_000
# Most a pathology may add to the retinal thickness (intraretinal fluid), in mm.
_MAX_SWELLING_MM = 0.15


@dataclass(frozen=True)
class SyntheticOCT:
    """One synthetic OCT volume and its ground truth.

    Attributes:
        volume: uint8 array [frames, rows, cols]: B-scans, depth, A-scans.
        spacing: Voxel spacing in mm as (slice, row, col).
        pathology: One of :data:`PATHOLOGIES`.
        foveal_thickness_mm: Total retinal thickness (ILM to Bruch's membrane) at the A-scan
            nearest the foveal centre, measured from the generated boundaries.
        labels: Everything above plus extras: ``device``, ``seed``, ``laterality``, the foveal
            centre (``fovea_frame``, ``fovea_column``, ``fovea_x_mm``, ``fovea_y_mm``), and
            per-pathology values (``drusen_count``, ``drusen_max_height_mm``,
            ``fluid_pocket_count``, ``thinning_fraction``).
        segmentation: uint8 array shaped like ``volume``; each voxel's index into
            :data:`SEGMENTATION_CLASSES`, decided at its row centre.
    """

    volume: np.ndarray
    spacing: tuple[float, float, float]
    pathology: str
    foveal_thickness_mm: float
    labels: dict[str, float | str]
    segmentation: np.ndarray


@dataclass
class _Steps:
    """Depth profile of every A-scan as a sum of blurred steps and slopes (in rows)."""

    steps: list[tuple[np.ndarray, np.ndarray | float]]
    slopes: list[tuple[np.ndarray, np.ndarray | float]]


def synthesize_oct(
    device: OCTDevice,
    *,
    seed: int,
    pathology: str = "normal",
    laterality: str = "R",
    lesion_scale: float = 1.0,
) -> SyntheticOCT:
    """Generate one macular OCT volume for a device's geometry.

    The same ``seed`` gives the same eye (fovea position, tilt, layer thicknesses, vessels and
    speckle) whatever the pathology, so a pathological volume differs from the normal one with
    the same seed only by its pathology.

    Args:
        device: Matrix size and spacing, e.g. ``OCT_DEVICES["spectralis"].scaled(0.25)``.
        seed: Non-negative integer; the volume is a deterministic function of all arguments.
        pathology: One of :data:`PATHOLOGIES`: ``"drusen"`` elevates the RPE in domes,
            ``"fluid"`` adds dark intraretinal pockets near the fovea, ``"thinning"`` thins the
            neural retina by 25-40%.
        laterality: ``"R"`` or ``"L"``; mirrors the nasal side, where the nerve fibre layer is
            thicker and the vascular arcades come from.
        lesion_scale: Multiplies the lateral size and the height of drusen and fluid pockets
            (1: clinical sizes of early disease, 0.3-0.8 mm across, smaller than a 4x8x8
            token of the CPU demo; 3: up to several tokens). Above 1 the retina is placed
            with room for the taller pockets, so the eye differs from the one at scale 1.

    Returns:
        The volume (uint8, [frames, rows, cols]) with its spacing, labels and segmentation.

    Raises:
        ValueError: On an unknown pathology or laterality, a negative seed or a lesion
            scale that is not positive.
    """
    if pathology not in PATHOLOGIES:
        raise ValueError(
            f"synthesize_oct: pathology must be one of {PATHOLOGIES}, got {pathology!r}"
        )
    if laterality not in ("R", "L"):
        raise ValueError(f"synthesize_oct: laterality must be 'R' or 'L', got {laterality!r}")
    if seed < 0:
        raise ValueError(f"synthesize_oct: seed must be >= 0, got {seed}")
    if not lesion_scale > 0:
        raise ValueError(f"synthesize_oct: lesion_scale must be > 0, got {lesion_scale}")

    # Separate streams so that anatomy and speckle do not depend on the pathology drawn.
    anatomy_rng = np.random.default_rng([seed, 0])
    pathology_rng = np.random.default_rng([seed, 1])
    noise_rng = np.random.default_rng([seed, 2])

    frames, rows, cols = device.frames, device.rows, device.columns
    dz, dy, dx = device.slice_spacing_mm, device.row_spacing_mm, device.column_spacing_mm
    nasal = 1.0 if laterality == "R" else -1.0

    x = (np.arange(cols) - (cols - 1) / 2) * dx
    y = (np.arange(frames) - (frames - 1) / 2) * dz
    jitter = min(0.25, 0.04 * cols * dx, 0.04 * frames * dz)
    fovea_x, fovea_y = anatomy_rng.uniform(-jitter, jitter, size=2)
    ex = x[None, :] - fovea_x  # [1, C] mm from the fovea, temporal-to-nasal for a right eye
    ey = y[:, None] - fovea_y  # [F, 1]
    radius = np.sqrt(ex**2 + ey**2)  # [F, C]
    nasal_x = nasal * ex

    thick = _layer_thicknesses(radius, nasal_x, anatomy_rng)
    # Placed before any pathology, with room for the thickest one, so that a pathological
    # volume shows the same eye in the same place as the normal one with this seed.
    normal_retina = sum(thick[name] for name in _RETINA_LEVELS)
    max_swelling = _MAX_SWELLING_MM * max(1.0, lesion_scale)
    bruch = _place_surface(x, y, normal_retina + max_swelling, rows * dy, anatomy_rng)
    labels: dict[str, float | str] = {}
    cysts: list[tuple[str, np.ndarray, np.ndarray]] = []
    if pathology == "drusen":
        _add_drusen(thick, ex, ey, pathology_rng, labels, lesion_scale)
    elif pathology == "fluid":
        cysts = _add_fluid(thick, ex, ey, pathology_rng, labels, lesion_scale, max_swelling)
    elif pathology == "thinning":
        fraction = pathology_rng.uniform(0.25, 0.40)
        for name in ("nfl", "gcl", "ipl", "inl", "opl", "onl", "elm", "myoid", "ez", "os", "iz"):
            thick[name] = thick[name] * (1.0 - fraction)
        labels["thinning_fraction"] = float(fraction)

    # Layer tops from Bruch's membrane upwards, in mm.
    tops: dict[str, np.ndarray] = {}
    depth = bruch
    for name in reversed(_RETINA_LEVELS):
        depth = depth - thick[name]
        tops[name] = depth
    ilm = tops["nfl"]

    to_row = 1.0 / dy
    profile = _Steps(steps=[], slopes=[])
    offset = _ascan_brightness(ex, ey, anatomy_rng)
    previous = _NOISE_FLOOR
    for name, level in _RETINA_LEVELS.items():
        amplitude = level - previous + (offset if name == "nfl" else 0.0)
        profile.steps.append((_rows(tops[name], dy), amplitude))
        previous = level
    choroid_top = bruch + thick["choriocapillaris"]
    sclera_top = choroid_top + thick["choroid"]
    for boundary, level in (
        (bruch, _CHORIOCAPILLARIS_LEVEL),
        (choroid_top, _CHOROID_LEVEL),
        (sclera_top, _SCLERA_LEVEL),
    ):
        profile.steps.append((_rows(boundary, dy), level - previous))
        previous = level
    # Attenuation with depth into tissue (display units per mm), steeper in the pigmented
    # choroid, and the spectrometer's sensitivity roll-off over the whole depth range.
    profile.slopes.append((_rows(ilm, dy), -50.0 * dy))
    profile.slopes.append((_rows(bruch, dy), -260.0 * dy))
    profile.slopes.append((_rows(sclera_top, dy), -500.0 * dy))
    profile.slopes.append((np.full_like(bruch, -0.5), -25.0 / rows))

    for host, top_offset, height in cysts:
        top = tops[host] + top_offset
        dark = _FLUID_LEVEL - _RETINA_LEVELS[host]
        profile.steps.append((_rows(top, dy), dark))
        profile.steps.append((_rows(top + height, dy), -dark))

    _add_vessels(profile, ex, ey, nasal, ilm, thick["nfl"], dx, dy, anatomy_rng)

    texture = _ChoroidTexture(frames, cols, dz, dx, dy, anatomy_rng)
    noise_shape = float(anatomy_rng.uniform(2.5, 8.0))
    volume = _render(
        profile,
        shape=(frames, rows, cols),
        choroid_top=choroid_top * to_row - 0.5,
        choroid_rows=thick["choroid"] * to_row,
        texture=texture,
        noise_table=_log_speckle_table(noise_shape, noise_rng),
        noise_rng=noise_rng,
    )

    # Computed after rendering and from no random stream, so the volume's bytes are unchanged.
    segmentation = label_bands(
        (frames, rows, cols),
        surfaces=[_rows(d, dy) for d in (ilm, tops["onl"], tops["rpe"], bruch, sclera_top)],
        lesions=_lesion_bands(pathology, tops, cysts, dy),
        chunk_voxels=_CHUNK_VOXELS,
    )

    fovea_frame = int(np.clip(round(fovea_y / dz + (frames - 1) / 2), 0, frames - 1))
    fovea_col = int(np.clip(round(fovea_x / dx + (cols - 1) / 2), 0, cols - 1))
    foveal_thickness = float(bruch[fovea_frame, fovea_col] - ilm[fovea_frame, fovea_col])
    labels = {
        "device": device.key,
        "seed": seed,
        "laterality": laterality,
        "pathology": pathology,
        "foveal_thickness_mm": foveal_thickness,
        "fovea_frame": fovea_frame,
        "fovea_column": fovea_col,
        "fovea_x_mm": float(fovea_x),
        "fovea_y_mm": float(fovea_y),
        "speckle_shape": noise_shape,
        "lesion_scale": float(lesion_scale),
        **labels,
    }
    return SyntheticOCT(
        volume=volume,
        spacing=(dz, dy, dx),
        pathology=pathology,
        foveal_thickness_mm=foveal_thickness,
        labels=labels,
        segmentation=segmentation,
    )


def _lesion_bands(
    pathology: str,
    tops: dict[str, np.ndarray],
    cysts: list[tuple[str, np.ndarray, np.ndarray]],
    dy: float,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(label, top row, bottom row) of every lesion, drawn where the renderer drew it."""
    fluid, drusen = SEGMENTATION_CLASSES.index("fluid"), SEGMENTATION_CLASSES.index("drusen")
    bands = [
        (fluid, _rows(tops[h] + t, dy), _rows(tops[h] + t + height, dy)) for h, t, height in cysts
    ]
    if pathology == "drusen":
        # The druse band sits between the RPE and Bruch's membrane; it is empty where flat.
        bands.append((drusen, _rows(tops["druse"], dy), _rows(tops["bm"], dy)))
    return bands


def _rows(depth_mm: np.ndarray, row_spacing: float) -> np.ndarray:
    # Row r covers depths [r, r + 1) * spacing, so its centre sits at (r + 0.5) * spacing.
    return (depth_mm / row_spacing - 0.5).astype(np.float32)


def _gauss(radius: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-(radius**2) / (2.0 * sigma**2))


def _layer_thicknesses(
    radius: np.ndarray, nasal_x: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Thickness in mm of every band at every A-scan, for a normal macula.

    Inner layers vanish in the foveal pit while the outer nuclear layer and cone outer segments
    thicken there; the nerve fibre layer grows towards the optic disc (nasal). Sums to about
    0.30-0.33 mm on the parafoveal rim and 0.21-0.24 mm at the foveal centre.
    """
    pit = rng.uniform(0.9, 1.1)

    def pit_shape(sigma: float) -> np.ndarray:
        return 1.0 - _gauss(radius, sigma * pit)

    def periphery(start: float, drop: float) -> np.ndarray:
        return 1.0 - drop * np.clip((radius - start) / 2.5, 0.0, 1.0)

    nfl = 0.017 * pit_shape(0.55) * (1.0 + 0.35 * np.clip(radius / 2.5, 0.0, 1.6))
    nfl = nfl * (1.0 + 0.9 * np.clip(nasal_x / 3.0, 0.0, 1.3))
    fovea = _gauss(radius, 0.45)
    shapes = {
        "nfl": nfl,
        "gcl": 0.042 * pit_shape(0.45) * periphery(1.1, 0.35),
        "ipl": 0.032 * pit_shape(0.45) * periphery(1.2, 0.2),
        "inl": 0.034 * pit_shape(0.38) * periphery(1.2, 0.15),
        "opl": 0.027 * pit_shape(0.32),
        "onl": 0.072 * (1.0 + 0.45 * fovea) * periphery(1.0, 0.15),
        "elm": 0.004 + 0.0 * radius,
        "myoid": 0.020 + 0.008 * fovea,
        "ez": 0.011 + 0.0 * radius,
        "os": 0.024 + 0.016 * fovea,
        "iz": 0.010 + 0.0 * radius,
        "rpe": 0.020 + 0.0 * radius,
        "druse": 0.0 * radius,
        "bm": 0.005 + 0.0 * radius,
        "choriocapillaris": 0.012 + 0.0 * radius,
        # The choroid is thickest under the fovea and thins towards the disc.
        "choroid": 0.27
        * (1.0 + 0.15 * _gauss(radius, 1.5))
        * (1.0 - 0.25 * np.clip(nasal_x / 3.0, 0.0, 1.0)),
    }
    factor = rng.uniform(0.9, 1.1, size=len(shapes))
    return {
        name: np.broadcast_to(shape * f, radius.shape).copy()
        for (name, shape), f in zip(shapes.items(), factor, strict=True)
    }


def _place_surface(
    x: np.ndarray, y: np.ndarray, retina: np.ndarray, depth_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Depth of Bruch's membrane: a bowl (the globe) plus a tilt, inside the middle third.

    The curvature and tilt are shrunk when needed so that the whole retina, ILM to Bruch's,
    fits in the middle third of the depth range; a centre crop in depth then keeps it.
    """
    bowl = rng.uniform(0.004, 0.012)  # sag per mm², so 0.06-0.19 mm at 4 mm from the centre
    tilt_x, tilt_y = rng.uniform(-0.02, 0.02, size=2)
    shape = -bowl * (x[None, :] ** 2 + y[:, None] ** 2) + tilt_x * x[None, :] + tilt_y * y[:, None]
    band = depth_mm / 3.0
    spare = band - float(retina.max()) - 0.02 * depth_mm
    span = float(shape.max() - shape.min())
    if span > 0:
        shape = shape * np.clip(spare / span, 0.0, 1.0)
    surface = shape
    top = float((surface - retina).min())
    bottom = float(surface.max())
    slack = max(0.0, band - (bottom - top))
    centre = depth_mm / 2.0 + rng.uniform(-0.35, 0.35) * slack
    return surface + (centre - (top + bottom) / 2.0)


def _ascan_brightness(ex: np.ndarray, ey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Slow variation of tissue brightness across A-scans (pupil vignetting, media opacities).
    offset = np.zeros(np.broadcast_shapes(ex.shape, ey.shape))
    for _ in range(3):
        fx, fy = rng.uniform(-0.6, 0.6, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        offset = offset + rng.uniform(2.0, 6.0) * np.cos(fx * ex + fy * ey + phase)
    return offset.astype(np.float32)


def _add_drusen(
    thick: dict[str, np.ndarray],
    ex: np.ndarray,
    ey: np.ndarray,
    rng: np.random.Generator,
    labels: dict[str, float | str],
    scale: float = 1.0,
) -> None:
    """Dome-shaped deposits between the RPE and Bruch's membrane, near the fovea; `scale`
    multiplies their radius and height."""
    count = int(rng.integers(5, 13))
    elevation = np.zeros(thick["rpe"].shape)
    widest = 0.0
    for _ in range(count):
        distance = np.sqrt(rng.uniform(0.0, 1.0)) * 1.6
        angle = rng.uniform(0, 2 * np.pi)
        cx, cy = distance * np.cos(angle), distance * np.sin(angle)
        radius = rng.uniform(0.15, 0.4) * scale
        height = min(rng.uniform(0.035, 0.09) * scale, 0.4 * radius)
        widest = max(widest, 2.0 * radius)
        rho2 = ((ex - cx) ** 2 + (ey - cy) ** 2) / radius**2
        elevation = np.maximum(elevation, height * np.clip(1.0 - rho2, 0.0, None) ** 1.5)
    thick["druse"] = elevation
    # The photoreceptors ride on the elevated RPE; the outer nuclear layer absorbs most of the
    # bump, so the inner surface rises only a little.
    thick["onl"] = thick["onl"] - np.minimum(0.7 * elevation, thick["onl"] - 0.02)
    labels["drusen_count"] = count
    labels["drusen_max_height_mm"] = float(elevation.max())
    labels["lesion_max_width_mm"] = float(widest)
    labels["lesion_max_height_mm"] = float(elevation.max())


def _add_fluid(
    thick: dict[str, np.ndarray],
    ex: np.ndarray,
    ey: np.ndarray,
    rng: np.random.Generator,
    labels: dict[str, float | str],
    scale: float = 1.0,
    max_swelling: float = _MAX_SWELLING_MM,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Ellipsoidal intraretinal cysts in the INL and ONL that thicken the retina; `scale`
    multiplies their half-axes and height, `max_swelling` (mm) caps the stacked height.

    Returns:
        (host layer, top of the pocket below the host's top in mm, pocket height in mm) per cyst.
    """
    count = int(rng.integers(3, 8))
    original = {name: thick[name].copy() for name in ("inl", "onl")}
    stacked = {name: np.zeros_like(thick[name]) for name in ("inl", "onl")}
    cysts = []
    widest, tallest = 0.0, 0.0
    for _ in range(count):
        host = "inl" if rng.uniform() < 0.35 else "onl"
        distance = np.sqrt(rng.uniform(0.0, 1.0)) * 1.0
        angle = rng.uniform(0, 2 * np.pi)
        cx, cy = distance * np.cos(angle), distance * np.sin(angle)
        ax, ay = rng.uniform(0.12, 0.35, size=2) * scale
        peak = rng.uniform(0.05, 0.14) * scale
        rho2 = ((ex - cx) / ax) ** 2 + ((ey - cy) / ay) ** 2
        # Overlapping cysts stack; keep the total within what the volume placement allowed for.
        swollen = (stacked["inl"] + stacked["onl"])[np.broadcast_to(rho2 < 4.0, thick["inl"].shape)]
        peak = min(peak, max_swelling - (float(swollen.max()) if swollen.size else 0.0))
        if peak < 0.02:
            continue
        widest, tallest = max(widest, 2.0 * float(max(ax, ay))), max(tallest, peak)
        height = peak * np.sqrt(np.clip(1.0 - rho2, 0.0, None))
        # The tissue around a cyst swells smoothly over twice its radius, so the inner surface
        # bulges as a hill rather than with the cyst's steep walls.
        swelling = np.maximum(height, peak * np.clip(1.0 - rho2 / 4.0, 0.0, None) ** 2)
        top = 0.3 * original[host] + stacked[host] + (swelling - height) / 2.0
        cysts.append((host, top, height))
        stacked[host] = stacked[host] + swelling
        thick[host] = thick[host] + swelling
    labels["fluid_pocket_count"] = len(cysts)
    labels["lesion_max_width_mm"] = widest
    labels["lesion_max_height_mm"] = tallest
    return cysts


def _add_vessels(
    profile: _Steps,
    ex: np.ndarray,
    ey: np.ndarray,
    nasal: float,
    ilm: np.ndarray,
    nfl: np.ndarray,
    dx: float,
    dy: float,
    rng: np.random.Generator,
) -> None:
    """Retinal vessels in the nerve fibre layer: a bright lumen and a shadow beneath it.

    Two arcade vessels pass above and below the fovea; a few thin branches run towards it and
    stop at the edge of the avascular zone.
    """
    vessels = []
    for side in (-1.0, 1.0):
        # Arcades: y as a function of x, curving away from the fovea on the nasal side.
        y0 = side * rng.uniform(1.5, 2.6)
        slope = rng.uniform(-0.15, 0.15)
        curve = side * rng.uniform(0.02, 0.08) * nasal
        along, across = ex, ey
        centre = y0 + slope * along + curve * along**2
        derivative = slope + 2 * curve * along
        vessels.append((across, centre, derivative, rng.uniform(0.09, 0.14), None))
    for _ in range(int(rng.integers(2, 6))):
        # Branches: x as a function of y, on one side of the fovea only.
        side = rng.choice([-1.0, 1.0])
        x0 = rng.uniform(-2.0, 2.0)
        slope = rng.uniform(-0.8, 0.8)
        curve = rng.uniform(-0.1, 0.1)
        along, across = ey, ex
        centre = x0 + slope * along + curve * along**2
        derivative = slope + 2 * curve * along
        # Stop at the rim of the foveal avascular zone; keep to one half, the arcade's side.
        start = rng.uniform(0.35, 0.7)
        radius = np.sqrt(ex**2 + ey**2)
        extent = np.clip((radius - start) / 0.15, 0.0, 1.0) * np.clip(side * ey / 0.2, 0.0, 1.0)
        vessels.append((across, centre, derivative, rng.uniform(0.035, 0.065), extent))

    pixel = max(dx, 1e-6)
    for across, centre, derivative, width, extent in vessels:
        distance = np.abs(across - centre) / np.sqrt(1.0 + derivative**2)
        # Thin vessels on a coarse grid are drawn one and a half pixels wide and proportionally
        # fainter, so they neither vanish between A-scans nor flicker along their length.
        drawn = max(width, 1.5 * pixel)
        chord = np.sqrt(np.clip(1.0 - (2.0 * distance / drawn) ** 2, 0.0, None)) * (width / drawn)
        if extent is not None:
            chord = chord * extent
        chord = np.broadcast_to(chord, ilm.shape)
        radius = width / 2.0
        centre_depth = ilm + np.maximum(radius + 0.004, 0.45 * nfl)
        half = radius * chord
        body = 30.0 * np.minimum(1.0, 3.0 * chord)
        shadow = min(90.0, 900.0 * width) * chord
        profile.steps.append((_rows(centre_depth - half, dy), body.astype(np.float32)))
        profile.steps.append((_rows(centre_depth + half, dy), (-body - shadow).astype(np.float32)))


class _ChoroidTexture:
    """Smooth random field for the choroid: dark vessel lumens in brighter stroma.

    Two octaves of cubic B-spline noise: small vessels (Sattler's layer) near Bruch's membrane,
    large ones (Haller's layer) deeper, in depth relative to the top of the choroid. The spline
    is evaluated separably with its four taps per axis as plain array arithmetic: as dense
    interpolation matrices the same work goes through multithreaded BLAS, which slows down
    twenty-fold when the cores are shared (e.g. with data-loader workers).
    """

    def __init__(
        self, frames: int, cols: int, dz: float, dx: float, dy: float, rng: np.random.Generator
    ) -> None:
        self.depth_rows = int(np.ceil(0.45 / dy)) + 2
        depth = (np.arange(self.depth_rows) + 0.5) * dy
        self.octaves = []
        for cell, weight_depth in ((0.045, 0.10), (0.11, 0.30)):
            z_taps = _bspline_taps(frames, dz, cell)
            x_taps = _bspline_taps(cols, dx, cell)
            d_index, d_weight = _bspline_taps(self.depth_rows, dy, cell / 2.0)
            # Fine detail near the top, coarse deeper, as the choroidal vessels grow with depth.
            fade = np.exp(-(((depth - weight_depth) / 0.12) ** 2))[:, None]
            shape = (int(z_taps[0].max()) + 1, int(d_index.max()) + 1, int(x_taps[0].max()) + 1)
            grid = rng.standard_normal(shape).astype(np.float32)
            self.octaves.append(
                (grid, z_taps, x_taps, (d_index, (d_weight * fade).astype(np.float32)))
            )

    def sample(self, f0: int, f1: int) -> np.ndarray:
        """Texture for frames [f0, f1) as [frames, depth_rows, cols], in display units."""
        field = None
        for grid, (z_index, z_weight), (x_index, x_weight), (d_index, d_weight) in self.octaves:
            coarse = sum(grid[z_index[f0:f1, j]] * z_weight[f0:f1, j, None, None] for j in range(4))
            lateral = sum(coarse[:, :, x_index[:, j]] * x_weight[:, j] for j in range(4))
            part = sum(lateral[:, d_index[:, j], :] * d_weight[None, :, j, None] for j in range(4))
            field = part if field is None else field + part
        # Dark lumens where the field is high; the stroma stays bright.
        return -62.0 * np.clip(0.75 * field + 0.15, 0.0, 1.0) + 10.0 * np.clip(-field, 0.0, 1.0)


def _bspline_taps(n: int, spacing: float, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline from control points every ``cell`` mm to n samples every ``spacing`` mm.

    Returns:
        (index, weight), both [n, 4]: the control points each sample blends, and how much.
    """
    positions = np.arange(n) * spacing / cell + 1.0
    index = np.floor(positions).astype(np.int64)[:, None] - 1 + np.arange(4)[None, :]
    t = np.abs(positions[:, None] - index)
    weight = np.where(
        t < 1.0,
        (4.0 - 6.0 * t**2 + 3.0 * t**3) / 6.0,
        np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0),
    )
    # Unit-variance control points give a field with std ~0.6 per axis pass; rescale to ~1.
    return index, (weight * 1.6).astype(np.float32)


def _log_speckle_table(shape: float, rng: np.random.Generator) -> np.ndarray:
    """256 equiprobable values of log-gamma speckle, zero-mean, in display units.

    Drawing a byte per voxel and looking it up is several times faster than sampling a gamma
    variate and taking its log, and 256 levels are finer than the 8-bit display.
    """
    samples = np.sort(np.log(rng.gamma(shape, 1.0 / shape, size=256 * 64)))
    table = samples.reshape(256, 64).mean(axis=1)
    table = (table - table.mean()) * _DISPLAY_UNITS_PER_NEPER
    return table.astype(np.float32)


# Depth blur (axial point spread) folded into the step and slope scatter: a [1/4, 1/2, 1/4]
# kernel convolved with the two-tap partial-volume split of a sub-pixel boundary. A step at
# pixel-centre position b = m + g + 0.5 rises by (1 - g) at image row m + 1 and by g at m + 2;
# blurred, it spreads over image rows m..m+3, which are buffer rows m+1..m+4.
_TAP_OFFSETS = (1, 2, 3, 4)


def _tap_weights(fraction: np.ndarray) -> tuple[np.ndarray, ...]:
    g = fraction
    return (0.25 * (1 - g), 0.5 * (1 - g) + 0.25 * g, 0.25 * (1 - g) + 0.5 * g, 0.25 * g)


def _scatter(
    items: list[tuple[np.ndarray, np.ndarray | float]], f0: int, f1: int, rows: int, cols: int
) -> np.ndarray:
    """Sum blurred sub-pixel impulses at each item's rows into a [f1-f0, rows+5, cols] array.

    Buffer row 0 collects everything above the image (it still counts for every row below);
    row i + 1 is image row i; rows past the image are collected at the end and discarded.
    """
    frames = f1 - f0
    padded = rows + 5
    base = (np.arange(frames)[:, None] * padded * cols + np.arange(cols)[None, :]).ravel()
    indices = []
    weights = []
    for position, amplitude in items:
        pos = position[f0:f1].ravel()
        amp = amplitude[f0:f1].ravel() if isinstance(amplitude, np.ndarray) else amplitude
        # A step centred on position b rises over the pixel interval (b - 0.5, b + 0.5).
        start = np.floor(pos - 0.5)
        fraction = (pos - 0.5 - start).astype(np.float32)
        start = start.astype(np.int64)
        for offset, weight in zip(_TAP_OFFSETS, _tap_weights(fraction), strict=True):
            row = np.clip(start + offset, 0, padded - 1)
            indices.append(base + row * cols)
            weights.append(weight * amp)
    flat = np.bincount(
        np.concatenate(indices), np.concatenate(weights), minlength=frames * padded * cols
    )
    return flat.reshape(frames, padded, cols).astype(np.float32)


def _render(
    profile: _Steps,
    *,
    shape: tuple[int, int, int],
    choroid_top: np.ndarray,
    choroid_rows: np.ndarray,
    texture: _ChoroidTexture,
    noise_table: np.ndarray,
    noise_rng: np.random.Generator,
) -> np.ndarray:
    frames, rows, cols = shape
    volume = np.empty(shape, dtype=np.uint8)
    chunk = max(1, _CHUNK_VOXELS // (rows * cols))
    depth = np.arange(texture.depth_rows, dtype=np.float32)[None, :, None]
    for f0 in range(0, frames, chunk):
        f1 = min(frames, f0 + chunk)
        n = f1 - f0
        slope = _scatter(profile.slopes, f0, f1, rows, cols)
        level = _scatter(profile.steps, f0, f1, rows, cols)
        level[:, 0] += _NOISE_FLOOR
        # Integrate twice along depth: second differences to slopes, first differences to levels.
        for r in range(1, rows + 1):
            slope[:, r] += slope[:, r - 1]
            level[:, r] += slope[:, r]
            level[:, r] += level[:, r - 1]
        image = level[:, 1 : rows + 1]

        # Choroid texture, placed in each A-scan from the top of the choroid down.
        top = np.floor(choroid_top[f0:f1]).astype(np.int64)  # [n, C]
        tex = texture.sample(f0, f1)
        below = depth - (choroid_top[f0:f1] - top)[:, None, :]
        envelope = np.clip(below / 3.0, 0.0, 1.0) * np.clip(
            (choroid_rows[f0:f1][:, None, :] - below) / 6.0, 0.0, 1.0
        )
        target = np.clip(top[:, None, :] + depth.astype(np.int64) + 1, 0, rows + 4)
        level[np.arange(n)[:, None, None], target, np.arange(cols)[None, None, :]] += tex * envelope

        np.maximum(image, _NOISE_FLOOR, out=image)
        image += noise_table[noise_rng.integers(0, 256, size=image.shape, dtype=np.uint8)]
        np.clip(image, 0.0, 255.0, out=image)
        volume[f0:f1] = image
    return volume
