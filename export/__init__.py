"""Export stage: a trained run -> an artifact folder (``tardis_edge.artifact``) of ONNX graphs (FP32 with the decode
in the graph, FP32 heatmaps, FP16, INT8 Q/DQ), TensorRT engines or their trtexec commands, and a verification
report against PyTorch.

Modules, in pipeline order: ``source`` (read the run), ``decode_graph`` (decode as TensorRT-parsable ops),
``onnx_export`` (graphs, metadata, checks), ``fp16``, ``calibration`` + ``quantize`` (INT8), ``tensorrt_build``,
``verify``, ``pipeline`` (all of it), ``cli`` (``tardis-export`` / ``python -m export``).
"""
