"""Shared connection rules (Postgres, BigQuery) used by checkpoint backends and connectors alike."""
