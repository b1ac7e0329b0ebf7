"""Networking: networks and subnets (global tables), ports and their IP allocations (cell tables).

`ipam` is the pure address logic; `networks`, `subnets` and `ports` are the database side, plain
synchronous functions of a SQLAlchemy Connection that the API and the conductor call inside their
own transactions. Errors are `errors.NetworkError` subclasses named as Neutron names them.
"""
