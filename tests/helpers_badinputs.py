"""A generator of awkward and broken image inputs, for the reliability tests.

Every file is made on the fly from a real photo, so no binary test files are
committed. :func:`make_cases` writes them into a folder and returns one
:class:`Case` per input, saying what a correct tool must do with it:

- a *valid* input must be read (EXIF rotation applied, transparency composited
  over white, 16-bit and CMYK converted) and processed at its own size; if it
  is *gray* (even when stored as RGB), ``prepare`` skips it and says so;
- an *invalid* input must give one error line that names the file and
  contains ``reason``.

Also here: a colorizer with a known output (:func:`constant_color_model`) and
SHA-256 hashing of a whole folder (to prove inputs are never modified).
"""

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# ----------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One input and the behaviour it calls for.

    Attributes
    ----------
    kind : str
        Short identifier, used as the test id.
    path : Path
        The input (may not exist: the "missing" case).
    valid : bool
        Whether a correct tool reads it.
    gray : bool
        Valid but gray: ``prepare`` must skip it, colorize must colorize it.
    shape : tuple of int or None
        ``(H, W)`` the loaded image must have (valid inputs).
    expected : ndarray or None
        The RGB uint8 array ``load_image`` must return, where it is known
        exactly or up to JPEG noise (see ``atol``).
    atol : float
        Largest mean absolute difference allowed against ``expected``.
    reason : str
        A word the error message must contain (invalid inputs).
    on_disk : bool
        The path is a regular file (folder scans see it).
    """

    kind: str
    path: Path
    valid: bool
    gray: bool = False
    shape: tuple = None
    expected: np.ndarray = None
    atol: float = 0.0
    reason: str = ""
    on_disk: bool = True


def small_photo(path, side=128):
    """A real photo read from ``path``, shrunk so its longer side is ``side``."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        return np.asarray(img, dtype=np.uint8).copy()


def luminance_gray(rgb):
    """Plain Rec. 709 luma as uint8 (H, W): a gray version of a photo."""
    return np.clip(rgb.astype(np.float64) @ [0.2126, 0.7152, 0.0722] + 0.5, 0, 255).astype(np.uint8)


def _png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width, height, bit_depth, color_type, rows):
    """A PNG file from raw rows (filter type 0), written without Pillow."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def bomb_png():
    """A 60-byte PNG whose header claims 100 000 x 100 000 pixels (10 gigapixels)."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def _save(rgb, path, **kwargs):
    Image.fromarray(rgb).save(path, **kwargs)
    return path


def _exif_case(folder, photo, orientation, turned):
    exif = Image.Exif()
    exif[274] = orientation  # the EXIF Orientation tag
    path = _save(photo, folder / f"exif_orientation_{orientation}.jpg", quality=95, subsampling=0, exif=exif.tobytes())
    return Case(f"exif_rotated_{orientation}", path, True, shape=turned.shape[:2], expected=turned, atol=3.0)


def _palette_case(folder, photo):
    """A palette PNG whose top-left quarter uses a transparent palette entry."""
    quantized = Image.fromarray(photo).quantize(colors=64)
    index = np.array(quantized)
    palette = np.array(quantized.getpalette()[: 3 * 256] + [0] * (3 * 256), dtype=np.uint8)[: 3 * 256].reshape(256, 3)
    transparent = 255
    palette[transparent] = (0, 0, 0)
    h, w = index.shape
    index[: h // 2, : w // 2] = transparent
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette.flatten().tolist())
    path = folder / "palette_transparent.png"
    img.save(path, transparency=transparent)
    expected = palette[index]
    expected[: h // 2, : w // 2] = 255
    return Case("palette_transparency", path, True, shape=(h, w), expected=expected, atol=0.0)


def _rgba_case(folder, photo):
    h, w = photo.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    path = _save(np.dstack([photo, alpha]), folder / "rgba.png")
    a = alpha[..., None] / 255.0
    expected = np.clip(photo * a + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
    return Case("rgba_png", path, True, shape=(h, w), expected=expected, atol=0.5)


def _png16_cases(folder, photo):
    h, w = photo.shape[:2]
    gray = luminance_gray(photo)
    gray_path = folder / "gray_16bit.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(gray_path)
    rgb16 = photo.astype(">u2") * 257
    rgb_path = folder / "rgb_16bit.png"
    rgb_path.write_bytes(png_bytes(w, h, 16, 2, [row.tobytes() for row in rgb16]))
    return [
        Case("png_16bit_gray", gray_path, True, gray=True, shape=(h, w), expected=np.dstack([gray] * 3)),
        Case("png_16bit_rgb", rgb_path, True, shape=(h, w), expected=photo),
    ]


def _strip():
    """A 1 x 5000 rainbow."""
    hue = np.linspace(0, 1, 5000, endpoint=False)
    rgb = np.stack([np.sin(2 * np.pi * (hue + k / 3)) * 0.5 + 0.5 for k in range(3)], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)[None]


KINDS = (
    "truncated_jpeg", "random_bytes", "empty_file", "text_file", "cmyk_jpeg", "png_16bit_gray", "png_16bit_rgb",
    "palette_transparency", "rgba_png", "tiny_1x1", "strip_1x5000", "exif_rotated_6", "exif_rotated_3",
    "exif_rotated_8", "decompression_bomb", "gray_as_rgb", "missing_path", "directory",
)  # fmt: skip


def make_cases(folder, photo, seed=0):
    """Write every awkward or broken input into ``folder``.

    Parameters
    ----------
    folder : path
        Created if missing.
    photo : ndarray of uint8, shape (H, W, 3)
        A real colour photo (small, for speed).
    seed : int
        For the random bytes.

    Returns
    -------
    list of Case
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = photo.shape[:2]
    rng = np.random.default_rng(seed)
    cases = []

    jpeg = _save(photo, folder / "whole.jpg", quality=92)
    data = jpeg.read_bytes()
    jpeg.unlink()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(data[: len(data) * 2 // 5])
    cases.append(Case("truncated_jpeg", truncated, False, reason="truncated"))

    noise = folder / "random_bytes.jpg"
    noise.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases.append(Case("random_bytes", noise, False, reason="not an image"))

    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    cases.append(Case("empty_file", empty, False, reason="empty"))

    text = folder / "notes.txt"
    text.write_text("These are not pixels.\nJust a note left among the photos.\n")
    cases.append(Case("text_file", text, False, reason="not an image"))

    cmyk = folder / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(cmyk, quality=95)
    cases.append(Case("cmyk_jpeg", cmyk, True, shape=(h, w), expected=photo, atol=4.0))

    cases += _png16_cases(folder, photo)
    cases.append(_palette_case(folder, photo))
    cases.append(_rgba_case(folder, photo))

    pixel = np.array([[[200, 40, 60]]], dtype=np.uint8)
    cases.append(Case("tiny_1x1", _save(pixel, folder / "tiny_1x1.png"), True, shape=(1, 1), expected=pixel))
    strip = _strip()
    cases.append(Case("strip_1x5000", _save(strip, folder / "strip_1x5000.png"), True, shape=(1, 5000), expected=strip))

    cases.append(_exif_case(folder, photo, 6, np.rot90(photo, k=-1)))
    cases.append(_exif_case(folder, photo, 3, np.rot90(photo, k=2)))
    cases.append(_exif_case(folder, photo, 8, np.rot90(photo, k=1)))

    bomb = folder / "bomb.png"
    bomb.write_bytes(bomb_png())
    cases.append(Case("decompression_bomb", bomb, False, reason="too many pixels"))

    gray = np.dstack([luminance_gray(photo)] * 3)
    gray_path = _save(gray, folder / "gray_saved_as_rgb.jpg", quality=95, subsampling=0)
    cases.append(Case("gray_as_rgb", gray_path, True, gray=True, shape=(h, w), expected=gray, atol=2.0))

    cases.append(Case("missing_path", folder / "missing.jpg", False, reason="no such file", on_disk=False))
    directory = folder / "a_folder.jpg"
    directory.mkdir(exist_ok=True)
    cases.append(Case("directory", directory, False, reason="directory", on_disk=False))
    assert tuple(c.kind for c in cases) == KINDS
    return cases


# ----------------------------------------------------------------- helpers


def sha256_tree(folder):
    """``{relative path: sha256}`` of every file under ``folder`` (links not followed)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


AB_BIAS = (0.35, 0.25)


def constant_color_model(path=None):
    """The real network with its output layer set to a constant ab.

    The last convolution gets zero kernels and a bias, so the model predicts
    ``tanh(AB_BIAS)`` everywhere: a colorized photo is then visibly coloured,
    whatever the input, and tests can tell "colorized" from "copied".

    Parameters
    ----------
    path : path, optional
        Also save the model there as ``.keras``.
    """
    from koala_utils.model import build_model

    model = build_model(backbone="efficientnet_lite0")
    layer = model.get_layer("decoder_ab")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.asarray(AB_BIAS, dtype=bias.dtype)])
    if path is not None:
        model.save(path)
    return model

