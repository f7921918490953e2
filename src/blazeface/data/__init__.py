"""Training data: label readers, augmentation, the training dataset and its source mixer."""
