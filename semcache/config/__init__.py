"""Category policies: the YAML model, the shipped default, calibration to a false-hit budget."""
