"""edge-fashion: a Fashion-MNIST classifier, trained, quantized to int8, verified and shipped to a board."""

__version__ = "0.1.0"
