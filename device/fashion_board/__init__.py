"""The board's classifier package, run by ../classify.py: stdlib, numpy, Pillow and a TFLite interpreter only.

Modules, by concern: common (shared names), runtimes (interpreter chain, checked model, Classifier),
preprocess (image to the 28x28 frame, turned one way), resample (exact integer shrinking),
segment (background fit and the garment's cut), objects (several objects: which one to keep),
yuv (camera frames as YUV420 planes), sources (files, stdin, camera, watch), stream (batches and
output lines), record (the one record of a frame), capture (--save-frames and the page's captures),
selftest (the manifest's cases), serve, live and page (--serve). Nothing here imports the host-side
package.
"""
