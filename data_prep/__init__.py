"""data_prep: turn ImageNet (archives or folders) into verified WebDataset shards, in parallel across workers
and MPI ranks, and make a synthetic stand-in in ImageNet's raw layout. Run as `python -m data_prep <command>`.

The shard format itself lives in `dist_vgg.data.format`; this package only produces it.
"""
