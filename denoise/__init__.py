"""ct-denoise: denoise CT DICOM with a convolutional autoencoder written in NumPy."""

__version__ = "0.1.0"
