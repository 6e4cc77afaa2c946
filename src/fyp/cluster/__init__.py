"""Running as several processes over shared stores: the notices that put one
process's changes in force in every other (:mod:`fyp.cluster.changes`)."""
