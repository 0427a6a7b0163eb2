"""The little languages a front end reads: MODEL specs (``models``) and ``--input`` specs (``inputs``).

They turn text into an ``nn.Module`` and example tensors; they are not capture, so they live above the
tracer and the gallery (a MODEL may name a gallery exhibit) and below the session layer that uses them.
"""
