"""Defences under test: oracle wrappers a model owner puts in front of a target (output
perturbation, misinformation, detection, watermarking), listed in
:data:`copycat.defences.registry.DEFENCES`. Steal, serve and the audit stack them between the
target and its output restriction."""
