"""Built-in search spaces (ResNet, VGG, Inception, DenseNet, Highway), found by name through `nas.registry`."""
