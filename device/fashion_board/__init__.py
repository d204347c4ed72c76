"""The board's classifier package, run by ../classify.py: stdlib, numpy, Pillow and a TFLite interpreter only.

Modules, by concern: common (shared names), runtimes (interpreter chain, checked model, Classifier),
preprocess (image to the 28x28 frame, turned one way), resample (exact integer shrinking),
segment (background fit and the garment's cut), sources (files, stdin, camera, watch), stream (batches and
output lines), capture (--save-frames), selftest (the manifest's cases). Nothing here imports the
host-side package.
"""
