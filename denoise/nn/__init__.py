"""The NumPy neural-network core: layers with explicit backward passes, the
convolutional autoencoder, losses, optimizers and model files.

No autograd library: every layer's ``backward`` sits next to its ``forward``
and is checked against finite differences in ``tests/nn``. Arrays are
channels-last (N, H, W, C), float32 for training and inference.
"""

from denoise.nn.activations import ACTIVATIONS, Arctan, LeakyReLU, ReLU, Sigmoid, Tanh
from denoise.nn.conv import (
    conv2d,
    conv2d_and_weight_grad,
    conv2d_backward,
    conv2d_naive,
    conv2d_transpose,
    conv2d_weight_grad,
    pad2d,
)
from denoise.nn.layers import Add, Concat, Conv2d, ConvTranspose2d, Layer, MeanPool2d, Upsample2d
from denoise.nn.losses import l1_loss, mse_loss
from denoise.nn.model import DEFAULT_ARCH, ConvAutoencoder, Decoder, Encoder, validate_config
from denoise.nn.optim import SGD, Adam, clip_grad_norm, cosine_decay
from denoise.nn.parallel import DataParallel
from denoise.nn.serialize import ModelFileError, load_model, save_model
from denoise.nn.threads import get_num_threads, set_num_threads
from denoise.nn.upconv import UpsampleConv2d

__all__ = [
    "ACTIVATIONS", "DEFAULT_ARCH", "Adam", "Add", "Arctan", "Concat", "Conv2d", "ConvAutoencoder",
    "ConvTranspose2d", "DataParallel", "Decoder", "Encoder", "Layer", "LeakyReLU", "MeanPool2d", "ModelFileError",
    "ReLU", "SGD", "Sigmoid", "Tanh", "Upsample2d", "UpsampleConv2d", "clip_grad_norm", "conv2d", "cosine_decay",
    "conv2d_and_weight_grad", "conv2d_backward", "conv2d_naive", "conv2d_transpose",
    "conv2d_weight_grad", "get_num_threads", "l1_loss", "load_model",
    "mse_loss", "pad2d", "save_model", "set_num_threads", "validate_config",
]
