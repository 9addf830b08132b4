"""absl experiment entry points: ``python -m experiments.train --config=...``."""
