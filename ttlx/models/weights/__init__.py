"""Pretrained weights: sources, downloads, conversion from torchvision and the torch file reader."""
