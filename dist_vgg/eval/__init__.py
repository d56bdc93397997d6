"""Evaluation as the paper does it (section 3.2): centre crop, dense FC-as-conv, multi-crop, multi-scale,
flips, fusion and ensembles, with exact top-1/top-5 counts on any number of ranks. Does not import the trainer."""
