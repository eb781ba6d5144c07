"""The rebalancer: moves running IoT functions when the world changes.

`actor` decides when to plan and for which pods; `plan` (pure, over the extender's
scorer) and `repin` (pure) say what should move; `evictor` is the one place a move
is made and remembered until the watches show it; `workloads` reads the pods and
their owners; `app`, `settings`, `cli` and `metrics` make it a service.
"""
