"""PyTorch Lightning port of the tf.keras models: a plain nn.Module backbone, a LightningModule,
a LightningDataModule over the shared stream, and a raw PyTorch loop as reference.

Run: python -m torch_impl --dataset fashion_mnist --model cnn --steps 500
Never imports tensorflow (tests/test_imports.py checks).
"""
