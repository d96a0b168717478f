"""Pipeline config: the YAML's models by concern (pipeline, source, destination, engine, alerting), loading
with clear errors (load), secret references (secrets). Connector configs live in their connector's folder;
validation reaches them through the :class:`~bizon_fast.config.catalog.ConnectorCatalog` it is handed."""
