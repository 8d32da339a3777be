"""Method registry, the first methods (zerofill, sense) and ``recon()`` end to end on simulated data."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from mrirecon import methods, sim
from mrirecon.errors import InputError
from mrirecon.kernels.backend import gpu_available
from mrirecon.methods.params import CoilMapParams  # module level: the registry resolves annotations here
from mrirecon.reconstruction import recon


def _nrmse(x: np.ndarray, truth: np.ndarray) -> float:
    """Magnitude NRMSE after the least-squares scale (zerofill is unscaled RSS, SENSE phase is coil 0's)."""
    x, y = np.abs(x).ravel(), np.abs(truth).ravel()
    a = np.dot(x, y) / np.dot(x, x)
    return float(np.linalg.norm(a * x - y) / np.linalg.norm(y))


@pytest.fixture(scope="module")
def sense_r4(phantom_r4):
    return recon(phantom_r4[2], "sense")


# -- registry -------------------------------------------------------------------------------------
def test_list_methods_describes_parameters():
    infos = {m.name: m for m in methods.list_methods()}
    assert {"zerofill", "sense"} <= set(infos)
    sense = infos["sense"]
    assert sense.summary and "Pruessmann" in sense.reference
    params = {p.name: p for p in sense.params}
    assert params["lam"].default == 0.01 and params["lam"].annotation is float
    assert params["max_iter"].type_name == "int"
    assert "relative to the data" in params["lam"].doc
    assert "largest eigenvalue" in params["lam"].doc  # continuation line joined
    assert all(p.doc for p in sense.params)
    assert infos["zerofill"].params == ()


def test_register_reads_signature_and_rejects_positional_params(monkeypatch):
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))

    @methods.register("double", summary="twice the zero-filled image")
    def double(ksp, *, factor: float = 2.0, label: str | None = None):
        """factor: how much to scale.
        label: a name."""
        return factor * methods.get_method("zerofill").fn(ksp)

    info = methods.get_method("double")
    assert [(p.name, p.default, p.doc) for p in info.params] == [("factor", 2.0, "how much to scale."), ("label", None, "a name.")]
    assert info.bind({"factor": 3}) == {"factor": 3.0, "label": None}
    with pytest.raises(InputError, match="'label' of method 'double' must be str | None"):
        info.bind({"label": 5})
    with pytest.raises(ValueError, match="registered twice"):
        methods.register("double", summary="")(double)
    with pytest.raises(TypeError, match="keyword-only"):
        methods.register("bad", summary="")(lambda ksp, lam=1.0: ksp)


# -- methods ----------------------------------------------------------------------------------------
def test_zerofill_fully_sampled_is_the_object_magnitude():
    image = sim.shepp_logan((64, 48))
    ksp = sim.simulate(image, sim.birdcage_maps(8, image.shape))  # sum |S|^2 = 1: RSS = |image|
    out = methods.get_method("zerofill").fn(ksp)
    assert out.dtype == np.complex64 and not out.imag.any()
    np.testing.assert_allclose(out.real, np.abs(image), atol=1e-6)  # measured 1.8e-7


def test_sense_beats_zerofill_at_r4(phantom_r4, sense_r4):
    image, _, ksp = phantom_r4
    err_sense = _nrmse(sense_r4.data, image)
    err_zf = _nrmse(recon(ksp, "zerofill").data, image)
    # measured: SENSE 0.108, zero-filled 0.411
    assert err_sense < 0.115
    assert err_zf > 0.40


def test_sense_with_given_maps(phantom_r4):
    image, maps, ksp = phantom_r4
    out = recon(ksp, "sense", maps=maps)
    # measured 0.140 with the true (uncropped) maps: the background noise is not masked as with ESPIRiT
    assert _nrmse(out.data, image) < 0.145
    assert out.provenance.parameters["maps"] == "<array (8, 128, 128) complex64>"
    with pytest.raises(InputError, match="coil maps have shape"):
        recon(ksp, "sense", maps=maps[:, :64])


def test_sense_uses_separate_calibration_scan():
    """Uniform R=2 lines with no fully sampled centre: the maps must come from ``KSpace.calibration``."""
    shape = (96, 96)
    image = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(8, shape)
    mask = np.zeros(shape, bool)
    mask[::2] = True
    ksp = sim.simulate(image, maps, mask, noise_sigma=1e-3, seed=3)
    full = sim.simulate(image, maps).data
    with pytest.raises(InputError, match="smaller than the ESPIRiT kernel"):
        recon(ksp, "sense")
    with pytest.raises(InputError, match="does not fit k-space"):
        recon(dataclasses.replace(ksp, calibration=full[:4, 36:60, 36:60]), "sense")
    ksp = dataclasses.replace(ksp, calibration=full[:, 36:60, 36:60])
    # measured: SENSE 0.0283, zero-filled 0.588 (half-FOV aliasing)
    assert _nrmse(recon(ksp, "sense").data, image) < 0.031
    assert _nrmse(recon(ksp, "zerofill").data, image) > 0.58


def test_sense_3d(phantom_3d_r3):
    image, _, ksp = phantom_3d_r3
    out = recon(ksp, "sense", calib=12, kernel=3)
    assert out.dims == ("z", "y", "x") and out.data.shape == image.shape
    # measured: SENSE 0.377, zero-filled 0.551 (R=3 over a small 16x32 phase-encode plane; a 3^3
    # ESPIRiT kernel keeps the test fast)
    assert _nrmse(out.data, image) < 0.39
    assert _nrmse(recon(ksp, "zerofill").data, image) > 0.54


# -- recon() ---------------------------------------------------------------------------------------
def test_recon_rejects_unknown_method_and_parameters(phantom_r4):
    ksp = phantom_r4[2]
    with pytest.raises(InputError, match=r"unknown method 'x' \(known: .*sense.*zerofill"):
        recon(ksp, "x")
    with pytest.raises(InputError, match=r"unknown parameter 'lamda' for method 'sense' \(valid: lam, max_iter"):
        recon(ksp, "sense", lamda=0.1)
    for bad in ({"lam": "big"}, {"max_iter": 2.5}, {"max_iter": True}):
        with pytest.raises(InputError, match="must be"):
            recon(ksp, "sense", **bad)
    with pytest.raises(InputError, match="unknown device"):
        recon(ksp, "zerofill", device="tpu")


def test_recon_rejects_nan_kspace(phantom_r4):
    ksp = phantom_r4[2]
    data = ksp.data.copy()
    data[0, 3, 4] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        recon(dataclasses.replace(ksp, data=data), "zerofill")


def test_recon_loops_over_batch_dims(phantom_r4):
    ksp = phantom_r4[2]
    stacked = np.stack([np.stack([ksp.data, 2 * ksp.data]), np.stack([3 * ksp.data, 4 * ksp.data])])
    batch = dataclasses.replace(ksp, data=stacked, dims=("slice", "echo") + ksp.dims)
    out = recon(batch, "zerofill")
    assert out.dims == ("slice", "echo", "y", "x") and out.data.shape == (2, 2, 128, 128)
    single = recon(ksp, "zerofill").data
    for (i, j), factor in zip(np.ndindex(2, 2), (1, 2, 3, 4)):
        np.testing.assert_allclose(out.data[i, j], factor * single, rtol=1e-5)


def test_recon_crops_to_recon_matrix_and_records_provenance():
    image = sim.shepp_logan((64, 128))  # 2x oversampled readout
    ksp = sim.simulate(image, sim.birdcage_maps(4, image.shape))
    ksp.header = dataclasses.replace(ksp.header, recon_matrix=(1, 64, 64), source_sha256="")
    full = recon(dataclasses.replace(ksp, header=dataclasses.replace(ksp.header, recon_matrix=(1, 1, 1))), "zerofill")
    out = recon(ksp, "zerofill")
    assert isinstance(out.data, np.ndarray) and out.data.shape == (64, 64) and out.dims == ("y", "x")
    np.testing.assert_array_equal(out.data, full.data[:, 32:96])  # centre pixel 64 -> 32
    prov = out.provenance
    assert prov.method == "zerofill" and prov.device == "cpu" and prov.software_version == "0.1.0"
    assert prov.input_sha256 == hashlib.sha256(ksp.data.tobytes()).hexdigest()
    assert set(prov.timings_s) == {"transfer_in", "method", "transfer_out", "total"}
    assert prov.timings_s["total"] >= prov.timings_s["method"] > 0
    assert out.geometry is ksp.header.geometry


def test_recon_records_defaults_actually_used(sense_r4, phantom_r4):
    params = sense_r4.provenance.parameters
    assert params == {
        "lam": 0.01, "max_iter": 30, "tol": 1e-4, "maps": None, "coil_maps": "espirit", "calib": 24, "kernel": 6,
        "thresh": 0.02, "crop": 0.95,
    }
    # simulated data has no source file: the checksum is that of the k-space samples
    assert sense_r4.provenance.input_sha256 == hashlib.sha256(phantom_r4[2].data.tobytes()).hexdigest()


@pytest.mark.skipif(gpu_available(), reason="checks the error raised without a GPU")
def test_recon_without_gpu_reports_device(phantom_r4):
    with pytest.raises(InputError, match="no CUDA GPU"):
        recon(phantom_r4[2], "zerofill", device="cuda")


# -- GPU twins -------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["zerofill", "sense"])
def test_every_method_on_gpu_matches_cpu(phantom_r4, name):
    import cupy as cp

    ksp = phantom_r4[2]
    cpu = recon(ksp, name, device="cpu")
    gpu = recon(ksp.to("cuda"), name, device="cuda")
    assert isinstance(gpu.data, cp.ndarray) and gpu.provenance.device == "cuda"
    err = np.linalg.norm(cp.asnumpy(gpu.data) - cpu.data) / np.linalg.norm(cpu.data)
    assert err < 1e-4  # complex64 FFTs and reductions in a different order


def test_coil_map_parameters_are_one_shared_group():
    """sense, l1wavelet, tv and nufft_sense take the same coil-map parameters, documented once
    (``CoilMapParams``); the registry lists them flat and refuses a group that repeats a name."""
    from mrirecon.cli import phantom_kspace
    from mrirecon.methods import get_method, register

    fields = tuple(f.name for f in dataclasses.fields(CoilMapParams))
    for name in ("sense", "l1wavelet", "tv", "nufft_sense"):
        info = get_method(name)
        assert info.groups == (("coils", CoilMapParams, fields),)
        flat = {p.name: p for p in info.params}
        assert all(flat[f].default == getattr(CoilMapParams(), f) and flat[f].doc for f in fields)
    with pytest.raises(TypeError, match="repeats a parameter"):

        @register("repeats_calib", summary="never registered")
        def repeats_calib(ksp, *, calib: int = 24, coils: CoilMapParams = CoilMapParams()):
            """calib: a second calib."""

    with pytest.raises(InputError, match="must be int"):
        recon(phantom_kspace(matrix=32, slices=1, coils=4), "sense", calib=2.5)
