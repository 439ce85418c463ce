"""The study's answer: survival analyses, hazard ratios and their estimators."""
