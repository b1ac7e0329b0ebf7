"""The OpenStack APIs as one ASGI app: one package per service it speaks (identity, compute, network, image)."""
