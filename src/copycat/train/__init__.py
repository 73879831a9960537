"""Training copycats and targets: architectures (:mod:`.models`, listed in :mod:`.registry`),
the loop (:mod:`.fit`) and checkpoints (:mod:`.checkpoint`)."""
