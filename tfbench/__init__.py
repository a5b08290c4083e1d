"""tfbench: does a better ImageNet model transfer better?

A TensorFlow/Keras benchmark that reruns Kornblith, Shlens & Le (CVPR 2019) -- ImageNet backbones x
image-classification datasets x three regimes (linear probe, fine-tune, from scratch) -- and puts any
user backbone through the same protocol.
"""

__version__ = "0.1.0"
