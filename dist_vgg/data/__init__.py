"""Data: the shard format (`format`), and the input pipelines that read it (DALI and the CPU path)."""
