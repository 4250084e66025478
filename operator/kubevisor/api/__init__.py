"""The three custom resources as pydantic models, and the CRD YAML generated from them."""
