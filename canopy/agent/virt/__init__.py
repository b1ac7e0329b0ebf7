"""Virt drivers: what an agent uses to run guests (the fake here; libvirt later)."""
