"""The PyTorch world in and out: published checkpoints (DeepMind's and RobustBench's
`DMWideResNet` / `DMPreActResNet` state dicts) into rgd's Keras models and back, and the safe
readers of `.pt`, safetensors and JAX `.npy` files they need (no arbitrary unpickling).

  weight_files  reads weight files safely (torch.load(weights_only=True), safetensors, a
                restricted unpickler for `.npy`), through tf.io.gfile
  published     import (state dict -> model.keras + model.json) and export (-> .pt/.safetensors)
  guided_diffusion  openai/guided-diffusion's ADM state dict (64x64_diffusion.pt) -> rgd.edm.adm

The name mapping itself is pure and lives with the models (rgd.models.torch_format). torch and
safetensors are optional: imported only when such a file is read or written. docs/published_models.md.
"""
