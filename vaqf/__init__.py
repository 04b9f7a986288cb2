"""vaqf: compile quantized neural networks (binary-weight ViTs, structurally sparse CNNs) to FPGA HLS."""

__version__ = "0.1.0"
