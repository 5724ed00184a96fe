"""Handler bodies, one module per concern; ``mediaflow_operator.main`` registers them with kopf."""
