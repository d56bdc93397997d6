"""One module per `dist-vgg` subcommand: `configure(parser)` adds its arguments, `run(args)` returns the exit code."""
