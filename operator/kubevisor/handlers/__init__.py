"""kopf glue for the controller: parse, ask core, patch."""
