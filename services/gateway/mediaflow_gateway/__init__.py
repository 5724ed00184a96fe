"""Mediaflow gateway: REST API (``/v1``) and web UI over the pipeline core.

Two backends behind one interface: *embedded* (jobs run in-process in a worker
pool) and *cluster* (MediaJob objects through the Kubernetes API)."""
