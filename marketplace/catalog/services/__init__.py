"""Catalog services: products (``products``: create, edit, submit, delist, read), plans (``plans``: add, change,
retire) and what they share (``common``: tenancy, masking rules, ``plans_offered``). The search and the search
documents are ``marketplace.catalog.search`` (``search_products``, ``reindex_product``)."""
