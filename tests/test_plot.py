"""Plot helpers render headless (Agg) to non-blank PNGs and show what they claim to show."""
from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mrirecon import plot, recon, sim  # noqa: E402
from mrirecon.errors import InputError  # noqa: E402

# Fraction of mid-tone pixels (conftest ``midtone_fraction``): measured 0.21-0.75 for the figures below,
# 0.002-0.005 for blank ones.
MIN_MIDTONES = 0.05


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # Figure() objects print through Agg: no display needed
    return buf.getvalue()


@pytest.fixture(scope="module")
def phantom_images(phantom_r4):
    image, _, ksp = phantom_r4
    return image, ksp, recon(ksp, "zerofill", device="cpu")


def test_each_helper_draws_a_non_blank_figure(phantom_images, midtone_fraction) -> None:
    truth, ksp, zf = phantom_images
    stack = np.stack([truth, 0.5 * truth, 0.25 * truth])
    figures = {
        "image": zf.plot(),
        "kspace": ksp.plot(),
        "kspace_coil": plot.plot_kspace(ksp, coil=2),
        "montage": plot.montage(stack),
        "compare": plot.compare({"truth": truth, "zerofill": zf}, reference="truth"),
        "sweep": plot.sweep([truth, zf], [1e-3, 1e-2]),
    }
    for name, fig in figures.items():
        value = midtone_fraction(_png(fig))
        assert value > MIN_MIDTONES, f"{name} looks blank ({value:.3f} mid-tone pixels)"


def test_mask_view_shows_the_mask(phantom_images) -> None:
    """Binary, so no mid-tones: the drawn array is the mask and about 1/R of the PNG panel is white."""
    from PIL import Image as PILImage

    _, ksp, _ = phantom_images
    fig = plot.plot_mask(ksp)
    mask = np.asarray(ksp.sampling_mask())
    np.testing.assert_array_equal(np.asarray(fig.axes[0].images[0].get_array()), mask)
    grey = np.asarray(PILImage.open(io.BytesIO(_png(fig))).convert("L"))
    box = fig.axes[0].get_window_extent()  # panel in pixels, origin bottom left
    h = grey.shape[0]
    panel = grey[int(h - box.y1) + 2:int(h - box.y0) - 2, int(box.x0) + 2:int(box.x1) - 2]
    assert abs(float((panel > 127).mean()) - float(mask.mean())) < 0.02  # measured 0.0024


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_blank_data_gives_a_blank_figure(value, midtone_fraction) -> None:
    """The threshold above can fail: a constant image is one flat panel."""
    fig = plot.compare({"a": np.full((64, 64), value), "b": np.full((64, 64), value)}, reference="a", title="flat")
    assert midtone_fraction(_png(fig)) < MIN_MIDTONES


def test_image_plane_picks_the_requested_entry() -> None:
    x = np.arange(3)[:, None, None] * np.ones((3, 4, 5))
    assert plot.image_plane(x).max() == 1  # middle entry by default
    assert plot.image_plane(x, {"0": 2}).max() == 2
    assert plot.image_plane(-x, {"0": 2}).min() == 2  # magnitude


def test_matched_scale_and_nrmse_against_known_values(rng) -> None:
    ref = rng.random((16, 16))
    assert plot.matched_scale(0.25 * ref, ref) == pytest.approx(4.0)
    assert plot.nrmse(3.0 * ref, ref) == pytest.approx(0.0, abs=1e-12)
    noisy = ref + 0.1 * rng.standard_normal(ref.shape)
    a = plot.matched_scale(noisy, ref)
    expected = np.linalg.norm(a * noisy - ref) / np.linalg.norm(ref)
    assert plot.nrmse(noisy, ref) == pytest.approx(expected)
    assert plot.nrmse(noisy, ref) <= np.linalg.norm(noisy - ref) / np.linalg.norm(ref)  # the scale is optimal


def test_montage_and_compare_layouts(phantom_images) -> None:
    truth, _, zf = phantom_images
    maps = sim.birdcage_maps(8, truth.shape)
    fig = plot.montage(maps, ncols=4)
    assert len([ax for ax in fig.axes if ax.images]) == 8
    fig = plot.compare({"truth": truth, "zerofill": zf}, reference="truth")
    assert len([ax for ax in fig.axes if ax.images]) == 3  # two images + one error map
    assert "NRMSE" in " ".join(ax.get_title() for ax in fig.axes)


def test_mask_title_reports_the_acceleration(phantom_images) -> None:
    _, ksp, _ = phantom_images
    title = plot.plot_mask(ksp).axes[0].get_title()
    fraction = float(np.asarray(ksp.sampling_mask()).mean())
    assert f"R = {1 / fraction:.1f}" in title


def test_bad_input_is_an_input_error(phantom_images) -> None:
    truth, _, zf = phantom_images
    with pytest.raises(InputError, match="reference"):
        plot.compare({"a": truth}, reference="b")
    with pytest.raises(InputError, match="compare shapes"):
        plot.compare({"a": truth, "b": truth[:10]}, reference="a")
    with pytest.raises(InputError, match="montage axis"):
        plot.montage(zf, axis="coil")
    with pytest.raises(InputError, match="1D array"):
        plot.plot_image(np.zeros(5))
