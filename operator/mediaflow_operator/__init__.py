"""kopf operator: drives the Mediaflow pipeline for MediaJob resources."""
