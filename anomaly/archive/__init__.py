"""Archive scoring: a folder or bucket of images scored by the exported model, results written as Parquet.

The same code runs in one process or on a Ray Data actor pool (one ONNX Runtime session per actor), so scoring a few
million past images after a new model is promoted needs no other engine. Torch is never imported.
"""
