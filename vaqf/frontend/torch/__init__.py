"""PyTorch frontend (the ``torch`` extra): DeiT/ViT definitions with timm's parameter names,
quantization-aware training (binary/integer weights, k-bit activations), a training helper, and export to
QONNX that ``vaqf.load_model`` imports with no flags."""

from vaqf.frontend.torch.deit import QuantPoint, VisionTransformer, ViTConfig, deit, export_onnx
from vaqf.frontend.torch.export import export_qonnx
from vaqf.frontend.torch.qat import (
    ActQuant,
    BinaryLinear,
    ConstQuant,
    QuantConv2d,
    QuantLinear,
    calibrate,
    quantize_vit,
    set_activation_quantization,
    set_weight_quantization,
)
from vaqf.frontend.torch.train import TrainConfig, accuracy, fit, predict, train_float, train_qat

__all__ = ["ActQuant", "BinaryLinear", "ConstQuant", "QuantConv2d", "QuantLinear", "QuantPoint", "TrainConfig",
           "ViTConfig", "VisionTransformer", "accuracy", "calibrate", "deit", "export_onnx", "export_qonnx", "fit",
           "predict", "quantize_vit", "set_activation_quantization", "set_weight_quantization", "train_float",
           "train_qat"]
