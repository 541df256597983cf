"""The colour-cast metric the vivid-colour targets use: how far a colorization's average colour drifts."""


from koala_utils.color import lab_to_rgb, rgb_to_lab, to_uint8
from koala_utils.metrics import colour_cast


def test_colour_cast_measures_a_global_tint_and_ignores_zero_mean_changes(sample_photos):
    from koala_utils.images import load_image

    rgb = load_image(sample_photos[0])
    assert colour_cast(rgb, rgb) == 0.0
    lab = rgb_to_lab(rgb)
    tinted = lab.copy()
    tinted[..., 1] += 6.0  # a reddish cast of 6 Lab units over the whole photo
    cast = colour_cast(to_uint8(lab_to_rgb(tinted)), rgb)
    assert 4.5 < cast < 6.5  # 8-bit rounding and gamut clipping lose a little
    swapped = lab.copy()
    half = swapped.shape[1] // 2
    swapped[:, :half, 1] += 6.0  # +6 on the left half, -6 on the right: locally wrong, no global cast
    swapped[:, half : 2 * half, 1] -= 6.0
    assert colour_cast(to_uint8(lab_to_rgb(swapped)), rgb) < cast / 3
