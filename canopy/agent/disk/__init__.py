"""Disks for guests: images fetched through the Image API into a per-host cache, qcow2 overlays on top."""
