DROP VIEW amber.catalog_overview;
DROP VIEW amber.ingest_backlog;
DROP VIEW amber.serving_model;
DROP FUNCTION amber.bank_neighbours(bigint, integer);
DROP VIEW amber.ambiguous_entries;
DROP VIEW amber.prototype_overview;
DROP VIEW amber.bank_versions;
DROP VIEW amber.bank_overview;
DROP FUNCTION amber.cosine(real[], real[]);
