"""HTTP routes, one Chalice Blueprint per resource; the logic they call lives beside them."""
