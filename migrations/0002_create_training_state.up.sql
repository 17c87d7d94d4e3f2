-- Training runs and steps, model versions and the serving pointer, the memory bank, prototypes.
CREATE TABLE amber.training_runs (
    run_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'stopped', 'failed', 'finished')),
    seed         bigint NOT NULL,
    config       jsonb NOT NULL DEFAULT '{}',
    host         text,
    last_step    bigint NOT NULL DEFAULT 0 CHECK (last_step >= 0),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE amber.training_steps (
    run_id           bigint NOT NULL REFERENCES amber.training_runs ON DELETE CASCADE,
    step             bigint NOT NULL CHECK (step >= 0),
    total_loss       real NOT NULL,
    losses           jsonb NOT NULL DEFAULT '{}',
    learning_rate    real NOT NULL,
    pairs_per_second real,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
);
COMMENT ON COLUMN amber.training_steps.losses IS 'Each loss term by name, e.g. {"triplet": 0.31, "memory": 2.1}';

CREATE TYPE amber.model_status AS ENUM ('candidate', 'promoted', 'retired');

CREATE TABLE amber.models (
    version         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_version  bigint REFERENCES amber.models (version),
    run_id          bigint REFERENCES amber.training_runs ON DELETE SET NULL,
    step            bigint NOT NULL CHECK (step >= 0),
    config          jsonb NOT NULL,
    parameters      bytea NOT NULL,
    optimizer_state bytea,
    metrics         jsonb NOT NULL DEFAULT '{}',
    status          amber.model_status NOT NULL DEFAULT 'candidate',
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz
);
CREATE UNIQUE INDEX models_one_promoted ON amber.models ((true)) WHERE status = 'promoted';
COMMENT ON COLUMN amber.models.parameters IS 'safetensors file bytes';

-- The serving pointer: one row, changed only by amber.promote_model.
CREATE TABLE amber.serving (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model_version bigint NOT NULL REFERENCES amber.models (version),
    changed_at    timestamptz NOT NULL DEFAULT now()
);

-- Promotes a model version in one transaction and tells the query service (NOTIFY
-- amber_model_promoted with the version as payload, delivered at commit).
CREATE FUNCTION amber.promote_model(target bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM amber.models WHERE version = target) THEN
        RAISE EXCEPTION 'model version % does not exist', target USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE amber.models SET status = 'retired' WHERE status = 'promoted' AND version <> target;
    UPDATE amber.models SET status = 'promoted', promoted_at = now() WHERE version = target;
    INSERT INTO amber.serving (singleton, model_version, changed_at) VALUES (true, target, now())
        ON CONFLICT (singleton) DO UPDATE SET model_version = EXCLUDED.model_version, changed_at = now();
    PERFORM pg_notify('amber_model_promoted', target::text);
END $$;

CREATE FUNCTION amber.all_finite(real[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT NOT ($1 && ARRAY['NaN', 'Infinity', '-Infinity']::real[]) $$;

CREATE TABLE amber.memory_bank (
    run_id            bigint NOT NULL REFERENCES amber.training_runs ON DELETE CASCADE,
    modality          amber.modality NOT NULL,
    slot              integer NOT NULL CHECK (slot >= 0),
    item_id           bigint NOT NULL REFERENCES amber.items (item_id),
    pair_id           bigint REFERENCES amber.pairs (pair_id),
    image_id          bigint REFERENCES amber.items (item_id),
    -- Finiteness is checked by the writer (MemoryBankStore) before the COPY: a CHECK with
    -- amber.all_finite costs a third of the bank-write time (8192 × 1024 comparisons).
    embedding         real[] NOT NULL CHECK (array_ndims(embedding) = 1),
    prototype         integer CHECK (prototype >= 0),
    ambiguity         real CHECK (ambiguity BETWEEN -1.0001 AND 1.0001),
    neighbour_item_id bigint REFERENCES amber.items (item_id),
    enqueued_step     bigint NOT NULL CHECK (enqueued_step >= 0),
    model_version     bigint REFERENCES amber.models (version),
    enqueued_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, modality, slot)
);
CREATE INDEX memory_bank_item ON amber.memory_bank (item_id);
-- Embeddings do not compress: keep them out of line without trying.
ALTER TABLE amber.memory_bank ALTER COLUMN embedding SET STORAGE EXTERNAL;
COMMENT ON TABLE amber.memory_bank IS 'The momentum-encoder queues, one slot per row, written with each checkpoint';
COMMENT ON COLUMN amber.memory_bank.image_id IS 'The image the entry belongs to (its own id for images): entries of the same image are not negatives';
COMMENT ON COLUMN amber.memory_bank.ambiguity IS 'Cosine similarity to the nearest bank entry of another image (neighbour_item_id)';

CREATE TABLE amber.prototypes (
    model_version bigint NOT NULL REFERENCES amber.models (version) ON DELETE CASCADE,
    index         integer NOT NULL CHECK (index >= 0),
    centroid      real[] NOT NULL CHECK (array_ndims(centroid) = 1 AND amber.all_finite(centroid)),
    image_count   integer NOT NULL DEFAULT 0 CHECK (image_count >= 0),
    text_count    integer NOT NULL DEFAULT 0 CHECK (text_count >= 0),
    PRIMARY KEY (model_version, index)
);
COMMENT ON COLUMN amber.prototypes.image_count IS 'Bank entries of images assigned to this prototype when the version was written';
