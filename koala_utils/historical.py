"""Prokudin-Gorskii glass plates: historical black-and-white photos with a true colour.

Sergei Prokudin-Gorskii (1905-1915) photographed each scene three times on one
glass plate, through a blue, a green and a red filter, stacked top to bottom.
Aligning the three exposures gives the scene's real colours, so these plates
are historical black-and-white photographs *with ground truth* for the
colorization network.

The three exposures were taken one after the other, so they are shifted by a
few pixels. :func:`align_plate` finds the shifts by cross-correlating, in the
Fourier domain (:func:`skimage.registration.phase_cross_correlation`), the Sobel
gradient magnitudes of the inner part of each exposure. Gradients are used
rather than raw intensities because one object has different brightness through
different filters (a red roof is bright through the red filter and dark through
the blue one) while its edges stay in place. The blue and red exposures are
aligned onto the green one. Measurements on the 23 bundled plates are in
:func:`align_plate`.
"""

from pathlib import Path

import numpy as np

from koala_utils.images import IMAGE_SUFFIXES, load_image, to_gray

REFERENCES = ("green", "blue", "red")
METHODS = ("sobel", "intensity")
BUNDLED_FOLDER = Path("data") / "historical" / "prokudin_gorskii"
SHARED_FOLDER = Path("..") / "shared" / "data" / "historical" / "prokudin_gorskii"
REPO_ROOT = Path(__file__).resolve().parent.parent


def split_plate(plate):
    """Cut a glass plate into its blue, green and red exposures.

    Parameters
    ----------
    plate : ndarray, shape (H, W) or (H, W, 3)
        The scanned plate, exposures stacked blue, green, red from top to
        bottom. An RGB scan is converted to gray first.

    Returns
    -------
    b, g, r : ndarray, each shape (H // 3, W), same dtype as ``plate``
        The three equal-height thirds; the last ``H % 3`` rows are dropped.

    Raises
    ------
    ValueError
        If the plate has fewer than 3 rows.
    """
    plate = np.asarray(plate)
    if plate.ndim == 3:
        plate = to_gray(plate)
    if plate.ndim != 2:
        raise ValueError(f"expected a gray plate of shape (H, W), got shape {plate.shape}")
    third = plate.shape[0] // 3
    if third == 0:
        raise ValueError(f"a plate needs at least 3 rows, got shape {plate.shape}")
    return plate[:third], plate[third : 2 * third], plate[2 * third : 3 * third]


def inner(image, fraction):
    """Crop ``fraction`` of the height and width away from each border.

    Parameters
    ----------
    image : ndarray, shape (H, W, ...)
    fraction : float in [0, 0.5)

    Returns
    -------
    ndarray, shape (about H * (1 - 2 * fraction), about W * (1 - 2 * fraction), ...)
    """
    dy = int(round(image.shape[0] * fraction))
    dx = int(round(image.shape[1] * fraction))
    return image[dy : image.shape[0] - dy, dx : image.shape[1] - dx]


def features(channel, method="sobel"):
    """The image that phase correlation compares.

    Parameters
    ----------
    channel : ndarray, shape (H, W)
        One exposure, any numeric dtype.
    method : {"sobel", "intensity"}
        ``"sobel"``: the Sobel gradient magnitude; ``"intensity"``: the values
        themselves, minus their mean.

    Returns
    -------
    ndarray of float64, shape (H, W)
    """
    from skimage.filters import sobel

    values = np.asarray(channel, dtype=np.float64)
    if method == "sobel":
        return sobel(values)
    if method == "intensity":
        return values - values.mean()
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def find_shift(reference, moving, crop_fraction=0.1, upsample_factor=1, method="sobel"):
    """Shift that moves ``moving`` onto ``reference``.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W)
        Two exposures of the same scene.
    crop_fraction : float
        Share of each border ignored (plate borders are damaged).
    upsample_factor : int
        1 for whole-pixel shifts; ``k`` for a precision of ``1 / k`` pixel.
    method : {"sobel", "intensity"}
        See :func:`features`.

    Returns
    -------
    shift : ndarray of float64, shape (2,)
        ``(dy, dx)``: ``shift_image(moving, shift)`` lines up with ``reference``.
    """
    from skimage.registration import phase_cross_correlation

    ref = inner(features(reference, method), crop_fraction)
    mov = inner(features(moving, method), crop_fraction)
    # Plain cross-correlation of the gradient images (no spectral whitening): measured as good
    # as skimage's "phase" normalization with Sobel features, and slightly better sub-pixel.
    shift, _, _ = phase_cross_correlation(ref, mov, upsample_factor=upsample_factor, normalization=None)
    return np.asarray(shift, dtype=np.float64)


def shift_image(image, shift):
    """Translate an image by ``(dy, dx)`` pixels (content moves down/right for positive values).

    Whole-pixel shifts use :func:`numpy.roll` (exact, wraps around);
    fractional ones use linear interpolation (:func:`scipy.ndimage.shift`).

    Parameters
    ----------
    image : ndarray, shape (H, W)
    shift : sequence of 2 floats

    Returns
    -------
    ndarray, shape (H, W); float64 for a fractional shift, else the input dtype
    """
    dy, dx = (float(s) for s in shift)
    if dy.is_integer() and dx.is_integer():
        return np.roll(image, (int(dy), int(dx)), axis=(0, 1))
    from scipy.ndimage import shift as nd_shift

    return nd_shift(np.asarray(image, dtype=np.float64), (dy, dx), order=1, mode="nearest")


def _border(size, fraction, largest_shift):
    return int(max(round(size * fraction), np.ceil(largest_shift)))


def align_plate(plate, crop_fraction=0.1, upsample_factor=1, reference="green", method="sobel", return_shifts=False):
    """Align the three exposures of a plate into a colour photo.

    The two other exposures are shifted onto ``reference``; the borders (the
    damaged plate edge, and whatever the shifts wrapped around) are cropped.

    Measured on the 23 plates in ``shared/data/historical/prokudin_gorskii``
    (score: mean correlation of the Sobel gradients of the three channel pairs
    on the central 60 %, after a Gaussian blur of sigma 1 so that interpolation
    blur is not rewarded; unaligned stacking: 0.325):

    * reference green 0.788, red 0.788, blue 0.784 with Sobel features. Green
      is the default: red and blue are the least alike pair (gradient
      correlation about 0.66 after alignment, against 0.82 for red-green and
      0.76 for green-blue), and the green reference never matches them directly.
    * Sobel features 0.788 against 0.762-0.788 for raw intensities; with raw
      intensities and a blue or red reference one plate (00757v) is put 93 px
      off. (With skimage's whitened "phase" normalization both features tie.)
    * ``upsample_factor=10`` gives 0.814 against 0.788 for whole pixels; the
      gain is real: flipping the fractional parts of the shifts gives 0.739.
      These scans are small (about 340 px wide), so half pixels show.
    * ``crop_fraction`` between 0.1 and 0.2 matters little; 0.05 lets the
      damaged borders in.

    Parameters
    ----------
    plate : ndarray, shape (H, W) or (H, W, 3)
        The scanned plate (blue, green, red exposures from top to bottom).
    crop_fraction : float
        Share of each border of an exposure ignored when matching, and at least
        cropped from the result.
    upsample_factor : int
        Sub-pixel precision of the shifts (1: whole pixels).
    reference : {"green", "blue", "red"}
        The exposure the two others are aligned onto.
    method : {"sobel", "intensity"}
        What phase correlation compares, see :func:`features`.
    return_shifts : bool
        Also return the shifts found.

    Returns
    -------
    rgb : ndarray of uint8, shape (h, w, 3)
        The colour photo, channels (R, G, B), a bit smaller than one exposure.
    shifts : dict, only if ``return_shifts``
        ``{"blue": (dy, dx), "green": (dy, dx), "red": (dy, dx)}``: how far each
        exposure was moved (the reference's is ``(0.0, 0.0)``).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    channels = dict(zip(("blue", "green", "red"), split_plate(plate), strict=True))
    shifts = {}
    aligned = {}
    for name, channel in channels.items():
        if name == reference:
            shift = np.zeros(2)
        else:
            shift = find_shift(channels[reference], channel, crop_fraction, upsample_factor, method)
        shifts[name] = tuple(float(s) for s in shift)
        aligned[name] = shift_image(channel, shift)
    rgb = np.stack([aligned["red"], aligned["green"], aligned["blue"]], axis=-1)
    largest = np.abs(np.array(list(shifts.values()))).max(axis=0)
    top = _border(rgb.shape[0], crop_fraction, largest[0])
    left = _border(rgb.shape[1], crop_fraction, largest[1])
    rgb = rgb[top : rgb.shape[0] - top, left : rgb.shape[1] - left]
    rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return (rgb, shifts) if return_shifts else rgb


def load_plate(path, **kwargs):
    """Load a plate file and align it.

    Parameters
    ----------
    path : str or os.PathLike
        A scanned plate (any format :func:`koala_utils.images.load_image` reads).
    **kwargs
        Passed to :func:`align_plate`.

    Returns
    -------
    rgb : ndarray of uint8, shape (h, w, 3)
        (and the shifts, if ``return_shifts=True``)
    """
    return align_plate(to_gray(load_image(path)), **kwargs)


def default_folder():
    """Where the plates are: the repo's ``data/historical/prokudin_gorskii`` if present, else the shared data."""
    bundled = REPO_ROOT / BUNDLED_FOLDER
    if bundled.is_dir():
        return bundled
    return (REPO_ROOT / SHARED_FOLDER).resolve()


def plate_paths(folder=None):
    """Sorted plate image files.

    Parameters
    ----------
    folder : str or os.PathLike, optional
        Defaults to :func:`default_folder`.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    FileNotFoundError
        If the folder does not exist.
    """
    folder = Path(folder) if folder is not None else default_folder()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of Prokudin-Gorskii plates")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
