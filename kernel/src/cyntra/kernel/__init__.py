"""The kernel: config, routing, scheduler, runner, dispatcher, verifier."""
