-- Continuous training: runs found again by name, and checkpoints that hold everything a trainer
-- resumes from. A checkpoint row, its bank slots, its steps and the run's progress are written
-- in one transaction (PostgresTrainingStore.commit).
ALTER TABLE amber.training_runs ADD COLUMN name text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200);
CREATE UNIQUE INDEX training_runs_name ON amber.training_runs (name) WHERE name IS NOT NULL;
COMMENT ON COLUMN amber.training_runs.name IS 'The name a continuous trainer resumes its run by (amber train --continuous --run NAME)';

CREATE TABLE amber.checkpoints (
    run_id        bigint NOT NULL REFERENCES amber.training_runs ON DELETE CASCADE,
    step          bigint NOT NULL CHECK (step >= 0),
    state         bytea NOT NULL,
    pair_cursor   bigint NOT NULL CHECK (pair_cursor >= 0),
    sampler       jsonb NOT NULL,
    pending_pairs bigint[] NOT NULL DEFAULT '{}',
    model_version bigint REFERENCES amber.models (version) ON DELETE SET NULL,
    bank_slots    integer NOT NULL DEFAULT 0 CHECK (bank_slots >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
);
-- Parameters and optimiser moments do not compress.
ALTER TABLE amber.checkpoints ALTER COLUMN state SET STORAGE EXTERNAL;
COMMENT ON TABLE amber.checkpoints IS 'Trainer checkpoints (newest few per run): state is a safetensors file with parameters, momentum encoder, optimiser state, queues and generators';
COMMENT ON COLUMN amber.checkpoints.pair_cursor IS 'The largest pair_id the trainer had taken in; pairs above it are read after a resume';
COMMENT ON COLUMN amber.checkpoints.pending_pairs IS 'Pairs taken in but not yet trained on at this checkpoint (they are trained on first after a resume)';
COMMENT ON COLUMN amber.checkpoints.bank_slots IS 'Memory-bank slots this checkpoint wrote (those enqueued since the previous one)';

-- Each run's newest checkpoint: where a restarted trainer resumes, and how far behind ingest it is.
CREATE VIEW amber.checkpoint_overview AS
SELECT DISTINCT ON (c.run_id)
       c.run_id, r.name, r.status, c.step, c.pair_cursor,
       cardinality(c.pending_pairs)                        AS pending_pairs,
       (SELECT count(*) FROM amber.pairs p WHERE p.pair_id > c.pair_cursor) AS pairs_not_taken_in,
       c.bank_slots, c.model_version,
       octet_length(c.state)                               AS state_bytes,
       c.created_at,
       now() - c.created_at                                AS age
FROM amber.checkpoints c
JOIN amber.training_runs r USING (run_id)
ORDER BY c.run_id, c.step DESC;

GRANT SELECT, INSERT, UPDATE, DELETE ON amber.checkpoints TO amber_app;
GRANT SELECT ON amber.checkpoints, amber.checkpoint_overview TO amber_auditor;
GRANT SELECT ON amber.checkpoint_overview TO amber_app;
