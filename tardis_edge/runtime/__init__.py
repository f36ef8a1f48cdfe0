"""Edge runtime (no torch): run an exported tardis-edge artifact on images, videos and cameras.

    from tardis_edge.runtime import open_runner
    with open_runner("artifact/") as runner:          # ONNX Runtime, fp32, decode in the graph
        result = runner(frame_bgr, color="BGR")        # whole frame, then a crop around the animal
        result.keypoints                               # (1, K, 2) image pixels, NaN where not found

Colour order: ``Runner`` takes RGB frames unless told ``color="BGR"`` (OpenCV's ``imread`` and ``VideoCapture`` give
BGR): say which on every call. ``DLCLive`` (DLC-live's interface, ``tardis_edge.runtime.dlclive``) takes BGR by
default, as DLC-live does. The ``tardis-edge`` command (``tardis_edge.runtime.cli``) wraps the runner for files and
streams. Importing this package imports neither torch nor the training or export code.
"""

from tardis_edge.runtime.backends import Backend, InferenceBackend
from tardis_edge.runtime.boxes import BoxFollower, FollowConfig, read_boxes_csv
from tardis_edge.runtime.dlclive import DLCLive
from tardis_edge.runtime.runner import PoseResult, Runner, artifact_model_file, open_runner
from tardis_edge.runtime.writers import DlcPredictions, DlcResultWriter, read_dlc_predictions

__all__ = [
    "Backend",
    "BoxFollower",
    "DLCLive",
    "DlcPredictions",
    "DlcResultWriter",
    "FollowConfig",
    "InferenceBackend",
    "PoseResult",
    "Runner",
    "artifact_model_file",
    "open_runner",
    "read_boxes_csv",
    "read_dlc_predictions",
]
