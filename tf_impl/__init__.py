"""tf.keras backend: the MLP and CNN, a compiled GradientTape loop (and model.fit as reference).

Run: python -m tf_impl --dataset fashion_mnist --model cnn --steps 500
Never imports torch (tests/test_imports.py checks).
"""
