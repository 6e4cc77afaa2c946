"""The stores on a PostgreSQL server (``--store postgresql://…``): one connection pool
shared by the stores of a process (:mod:`.database`), the schema kept as numbered SQL
files in ``migrations/``, and a module per store."""
