"""dist-vgg: the VGG family of Simonyan & Zisserman (2014), trained on ImageNet across SLURM nodes."""

__version__ = "0.1.0"
