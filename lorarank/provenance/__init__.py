"""Provenance: code fingerprints, container images, the archive, published digests (archive.smk, setup.smk)."""
