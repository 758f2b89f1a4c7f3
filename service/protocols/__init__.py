"""Thin transports over the prediction core: each decodes its request shape and encodes
the answer; validation, caching and the model call live below them."""
