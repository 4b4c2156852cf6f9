"""Licensing rules and transactions, one module per record family: resources, licences, reviews."""
