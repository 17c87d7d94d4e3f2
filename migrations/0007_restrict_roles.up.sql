-- Least privilege for the service and the auditor (the read-only amber_auditor could block
-- ingest, create temporary tables and large objects).
--
-- 1. Ingest is serialised by row locks on amber.ingest_locks instead of advisory locks: any role
--    may take any advisory lock, but SELECT … FOR UPDATE needs UPDATE on the table, which only
--    amber_app (and the owner) have. The auditor can read the table, not lock it.
CREATE TABLE amber.ingest_locks (
    name text PRIMARY KEY
);
COMMENT ON TABLE amber.ingest_locks IS 'One row per lock that serialises writers (pairs: pair id allocation; features: feature rows); locked FOR UPDATE';
INSERT INTO amber.ingest_locks (name) VALUES ('pairs'), ('features');
-- Explicit grants (not only 0004's default privileges, which hold only for the role that ran it):
-- the writers lock the rows; nobody but the owner adds or removes them.
REVOKE ALL ON amber.ingest_locks FROM amber_app, amber_auditor;
GRANT SELECT, UPDATE ON amber.ingest_locks TO amber_app;
GRANT SELECT ON amber.ingest_locks TO amber_auditor;

CREATE OR REPLACE FUNCTION amber.serialize_pair_ingest() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM amber.ingest_locks WHERE name = 'pairs' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'amber.ingest_locks has no row ''pairs'': pair ids would not be serialised (re-run migration 0007)';
    END IF;
    RETURN NULL;
END $$;

-- 2. Staging rows of `amber ingest`, one transaction's rows under its transaction id, deleted
--    before it commits (so no other session ever sees them): no temporary tables needed.
CREATE UNLOGGED TABLE amber.ingest_stage_items (
    txid        bigint NOT NULL,
    ordinal     bigint NOT NULL,
    modality    text NOT NULL,
    external_id text NOT NULL,
    caption     text,
    PRIMARY KEY (txid, ordinal)
);
CREATE UNLOGGED TABLE amber.ingest_stage_pairs (
    txid              bigint NOT NULL,
    ordinal           bigint NOT NULL,
    image_external_id text NOT NULL,
    text_external_id  text NOT NULL,
    split             text NOT NULL,
    PRIMARY KEY (txid, ordinal)
);
REVOKE ALL ON amber.ingest_stage_items, amber.ingest_stage_pairs FROM amber_auditor, amber_app;
GRANT SELECT, INSERT, DELETE ON amber.ingest_stage_items, amber.ingest_stage_pairs TO amber_app;

-- 3. Temporary tables only for the owner: revoke the database's TEMPORARY privilege from PUBLIC
--    (takes effect when the database's owner or a superuser migrates; PostgreSQL only warns
--    otherwise, and docs/reliability.md says what to ask the DBA for).
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'amber: could not revoke TEMPORARY on database % from PUBLIC (not its owner); ask its owner to', current_database();
END $$;

-- 4. Large objects and advisory locks: PostgreSQL lets every role create large objects and take
--    advisory locks. Amber uses neither from its roles (the migrator's advisory lock runs as the
--    owner), so this database's PUBLIC loses them; only a superuser can change these built-in
--    functions' privileges, so on a managed server where the owner is not one, a notice says so.
DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION pg_catalog.lo_creat(integer), pg_catalog.lo_create(oid), pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC;
    REVOKE EXECUTE ON FUNCTION pg_catalog.pg_advisory_lock(bigint), pg_catalog.pg_advisory_lock(integer, integer),
        pg_catalog.pg_advisory_lock_shared(bigint), pg_catalog.pg_advisory_lock_shared(integer, integer),
        pg_catalog.pg_advisory_xact_lock(bigint), pg_catalog.pg_advisory_xact_lock(integer, integer),
        pg_catalog.pg_advisory_xact_lock_shared(bigint), pg_catalog.pg_advisory_xact_lock_shared(integer, integer),
        pg_catalog.pg_try_advisory_lock(bigint), pg_catalog.pg_try_advisory_lock(integer, integer),
        pg_catalog.pg_try_advisory_lock_shared(bigint), pg_catalog.pg_try_advisory_lock_shared(integer, integer),
        pg_catalog.pg_try_advisory_xact_lock(bigint), pg_catalog.pg_try_advisory_xact_lock(integer, integer),
        pg_catalog.pg_try_advisory_xact_lock_shared(bigint), pg_catalog.pg_try_advisory_xact_lock_shared(integer, integer)
        FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'amber: only a superuser can revoke large-object creation and advisory locks from PUBLIC; the auditor keeps them here';
END $$;

-- 5. The login role the embedded cluster's services use (amber serve, amber train): amber_app's
--    rights and nothing more. It has no password: it can connect only where pg_hba.conf trusts
--    it (the embedded cluster's own socket). Elsewhere, grant amber_app to your own login roles.
DO $$
BEGIN
    CREATE ROLE amber_service LOGIN IN ROLE amber_app;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;
