"""DeepLabCut 3 PyTorch models through tardis-export (export/dlc_import.py), checked against DeepLabCut's own code."""

from __future__ import annotations


def test_environment_is_deeplabcut_3_with_pandas_2():
    """The environment scripts/setup_dlc_env.sh promises: DeepLabCut 3.0, pandas < 3, and this package beside them."""
    import deeplabcut
    import pandas

    import export.cli  # noqa: F401
    import tardis_edge  # noqa: F401

    assert deeplabcut.__version__.startswith("3.0."), deeplabcut.__version__
    assert int(pandas.__version__.split(".")[0]) < 3, pandas.__version__
