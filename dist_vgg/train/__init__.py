"""The trainer: config (dataclasses + named recipes), engines (DDP, DeepSpeed), the loop, preemption, lock.
Entry point: `dist-vgg train` (dist_vgg.commands.train) → `dist_vgg.train.loop.run_training`."""
