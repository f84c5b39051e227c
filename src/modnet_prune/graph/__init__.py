"""Channel dependencies and compute cost of any fx-traceable CNN (knows nothing of MODNet)."""
