"""Products, plans and catalog search (operators write, anyone reads listed products)."""
