"""The decision models: labelled pairs (rules, mined negatives) and the verifiers' training."""
