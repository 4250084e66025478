"""Pure decisions: placement, lifecycle, status, domain XML. No I/O, no frameworks, no clocks."""
