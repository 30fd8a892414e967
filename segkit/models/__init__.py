"""Segmentation models (U-Net, PSPNet, DeepLabV3+) on ResNet encoders, built by name."""
