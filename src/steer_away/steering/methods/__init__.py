"""The steering methods, one module each (the logit methods EADS and ACD share one)."""
