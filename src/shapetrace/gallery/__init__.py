"""Chapter 15 of *Deep Learning for Coders* in plain PyTorch, faithful to fastai 2.8, plus the named exhibits.

The architectures are importable by their fastai names (``create_head``, ``DynamicUnet``, ``TabularModel``,
``get_text_classifier``, ...). They depend on torch and torchvision only; fastai is never imported.
"""
