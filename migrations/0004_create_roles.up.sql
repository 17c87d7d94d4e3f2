-- Roles: amber_app (the service and trainer: data only, no DDL) and amber_auditor (read-only).
-- Roles are cluster-wide: created if missing, and kept by the down migration (other databases
-- of the cluster may use them). They cannot log in; grant them to login roles:
--   CREATE ROLE alice LOGIN PASSWORD '…' IN ROLE amber_auditor;
DO $$
BEGIN
    CREATE ROLE amber_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
DO $$
BEGIN
    CREATE ROLE amber_auditor NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

GRANT USAGE ON SCHEMA amber TO amber_app, amber_auditor;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA amber TO amber_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA amber TO amber_app;
GRANT SELECT ON ALL TABLES IN SCHEMA amber TO amber_auditor;
REVOKE EXECUTE ON FUNCTION amber.promote_model(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION amber.promote_model(bigint) TO amber_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA amber GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO amber_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA amber GRANT USAGE, SELECT ON SEQUENCES TO amber_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA amber GRANT SELECT ON TABLES TO amber_auditor;
