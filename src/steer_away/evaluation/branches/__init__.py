"""Whether a category's expert and anti-expert branches differ in toxicity on a model (`categories check`)."""
