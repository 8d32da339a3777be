"""File-level pipelines on top of the core: the Zarr result store, NIfTI export and
``reconstruct_file`` (one raw file -> tasks -> embedded Dask -> store).

Modules: ``store`` (series layout, resume, OME-NGFF metadata), ``nifti`` (``write_nifti``),
``reconstruct`` (``reconstruct_file``). Only this layer imports Dask and Zarr.
"""
