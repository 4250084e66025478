"""Nova-style placement: capacity with allocation ratios, filters, NUMA fitting, weighers."""
