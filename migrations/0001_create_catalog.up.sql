-- Items, their features, pairs, and the ingest cursor.
CREATE SCHEMA amber;
COMMENT ON SCHEMA amber IS 'Amber: items, features, pairs, memory bank, models (see docs/audit.md)';

CREATE TYPE amber.modality AS ENUM ('image', 'text');
CREATE TYPE amber.split AS ENUM ('train', 'dev', 'test');
CREATE TYPE amber.element_type AS ENUM ('float16', 'float32');

CREATE FUNCTION amber.element_size(amber.element_type) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT CASE $1 WHEN 'float16' THEN 2 ELSE 4 END $$;

CREATE TABLE amber.items (
    item_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    modality    amber.modality NOT NULL,
    external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 512),
    caption     text CHECK (caption IS NULL OR length(caption) BETWEEN 1 AND 10000),
    source      text NOT NULL DEFAULT 'unknown',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (modality, external_id),
    UNIQUE (item_id, modality),
    CONSTRAINT only_texts_have_captions CHECK (modality = 'text' OR caption IS NULL)
);
COMMENT ON TABLE amber.items IS 'One image or text; external_id is unique per modality (ingest is idempotent by it)';

-- One row per modality fixes the feature dimensions every item of that modality must have.
CREATE TABLE amber.feature_dimensions (
    modality   amber.modality PRIMARY KEY,
    global_dim integer NOT NULL CHECK (global_dim > 0),
    local_dim  integer NOT NULL CHECK (local_dim > 0),
    UNIQUE (modality, global_dim, local_dim)
);

CREATE TABLE amber.features (
    item_id       bigint PRIMARY KEY,
    modality      amber.modality NOT NULL,
    global_dim    integer NOT NULL,
    local_dim     integer NOT NULL,
    local_count   integer NOT NULL CHECK (local_count BETWEEN 1 AND 4096),
    global_type   amber.element_type NOT NULL,
    local_type    amber.element_type NOT NULL,
    global_vector bytea NOT NULL,
    local_vectors bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (item_id, modality) REFERENCES amber.items (item_id, modality) ON DELETE CASCADE,
    -- Dimensions must match the modality's row in feature_dimensions.
    FOREIGN KEY (modality, global_dim, local_dim) REFERENCES amber.feature_dimensions (modality, global_dim, local_dim),
    CONSTRAINT global_vector_size CHECK (octet_length(global_vector) = global_dim * amber.element_size(global_type)),
    CONSTRAINT local_vectors_size CHECK (octet_length(local_vectors) = local_count * local_dim * amber.element_size(local_type))
);
-- Float vectors do not compress: store them out of line without trying (pglz costs CPU, saves nothing).
ALTER TABLE amber.features ALTER COLUMN global_vector SET STORAGE EXTERNAL;
ALTER TABLE amber.features ALTER COLUMN local_vectors SET STORAGE EXTERNAL;
COMMENT ON TABLE amber.features IS 'Frozen-encoder features: little-endian float16/float32, global [global_dim], local [local_count, local_dim] row-major';

CREATE TABLE amber.pairs (
    pair_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    image_id       bigint NOT NULL,
    text_id        bigint NOT NULL,
    image_modality amber.modality NOT NULL DEFAULT 'image' CHECK (image_modality = 'image'),
    text_modality  amber.modality NOT NULL DEFAULT 'text' CHECK (text_modality = 'text'),
    split          amber.split NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (image_id, text_id),
    FOREIGN KEY (image_id, image_modality) REFERENCES amber.items (item_id, modality),
    FOREIGN KEY (text_id, text_modality) REFERENCES amber.items (item_id, modality)
);
CREATE INDEX pairs_text_id ON amber.pairs (text_id);
CREATE INDEX pairs_split ON amber.pairs (split, pair_id);
COMMENT ON TABLE amber.pairs IS 'A matching image and text; pair_id grows in commit order (see serialize_pair_ingest)';

-- Pair ids become visible in increasing order: every statement that inserts pairs first takes a
-- transaction-scoped advisory lock, so no two ingests allocate ids at once, and an ingest's ids
-- commit before the next ingest allocates any. A consumer that remembers the last pair_id it
-- read therefore never skips a pair that commits later.
CREATE FUNCTION amber.serialize_pair_ingest() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('amber.pairs.ingest'));
    RETURN NULL;
END $$;
CREATE TRIGGER pairs_serialize_ingest BEFORE INSERT ON amber.pairs
    FOR EACH STATEMENT EXECUTE FUNCTION amber.serialize_pair_ingest();

-- Wake up listeners (the continuous trainer) when pairs commit.
CREATE FUNCTION amber.notify_new_pairs() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('amber_new_pairs', '');
    RETURN NULL;
END $$;
CREATE TRIGGER pairs_notify AFTER INSERT ON amber.pairs
    FOR EACH STATEMENT EXECUTE FUNCTION amber.notify_new_pairs();

CREATE TABLE amber.ingest_cursor (
    consumer     text PRIMARY KEY,
    last_pair_id bigint NOT NULL DEFAULT 0 CHECK (last_pair_id >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE amber.ingest_cursor IS 'For each consumer, the largest pair_id it has taken in (pairs at or below it are consumed)';
