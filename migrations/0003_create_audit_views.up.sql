-- The audit surface: views and functions an operator queries with psql (docs/audit.md).

-- Cosine similarity of two vectors; NULL when either is all zeros.
CREATE FUNCTION amber.cosine(a real[], b real[]) RETURNS double precision
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    result double precision;
BEGIN
    IF cardinality(a) <> cardinality(b) THEN
        RAISE EXCEPTION 'amber.cosine: vectors of different lengths (% and %)', cardinality(a), cardinality(b)
            USING ERRCODE = 'array_subscript_error';
    END IF;
    SELECT sum(x::float8 * y) / NULLIF(sqrt(sum(x::float8 * x)) * sqrt(sum(y::float8 * y)), 0)
        INTO result FROM unnest(a, b) AS t(x, y);
    RETURN result;
END $$;

-- What is in the bank, per run and modality, and how stale it is.
CREATE VIEW amber.bank_overview AS
SELECT b.run_id,
       b.modality,
       count(*)                                                   AS entries,
       count(DISTINCT b.item_id)                                  AS distinct_items,
       array_agg(DISTINCT b.model_version)                        AS model_versions,
       min(b.enqueued_step)                                       AS oldest_step,
       max(b.enqueued_step)                                       AS newest_step,
       r.last_step                                                AS trainer_step,
       r.last_step - min(b.enqueued_step)                         AS staleness_steps,
       now() - min(b.enqueued_at)                                 AS oldest_age,
       now() - max(b.enqueued_at)                                 AS newest_age,
       avg(b.ambiguity)::real                                     AS mean_ambiguity
FROM amber.memory_bank b
JOIN amber.training_runs r USING (run_id)
GROUP BY b.run_id, b.modality, r.last_step;

-- Which model versions wrote the bank's entries.
CREATE VIEW amber.bank_versions AS
SELECT run_id,
       modality,
       model_version,
       count(*)                                                            AS entries,
       (count(*)::double precision / sum(count(*)) OVER (PARTITION BY run_id, modality))::real AS share,
       min(enqueued_step)                                                  AS oldest_step,
       max(enqueued_step)                                                  AS newest_step
FROM amber.memory_bank
GROUP BY run_id, modality, model_version;

-- Prototype sizes in the bank and cross-modal agreement: of the text entries assigned to a
-- prototype whose image is also in the bank, the fraction whose image has the same prototype.
CREATE VIEW amber.prototype_overview AS
WITH sizes AS (
    SELECT run_id, prototype,
           count(*) FILTER (WHERE modality = 'image') AS image_entries,
           count(*) FILTER (WHERE modality = 'text')  AS text_entries
    FROM amber.memory_bank
    WHERE prototype IS NOT NULL
    GROUP BY run_id, prototype
), agreement AS (
    SELECT t.run_id, t.prototype,
           count(*)                                    AS paired_texts,
           avg((i.prototype = t.prototype)::integer)::real AS agreement
    FROM amber.memory_bank t
    JOIN amber.memory_bank i ON i.run_id = t.run_id AND i.modality = 'image' AND i.item_id = t.image_id
    WHERE t.modality = 'text' AND t.prototype IS NOT NULL
    GROUP BY t.run_id, t.prototype
)
SELECT s.run_id, s.prototype, s.image_entries, s.text_entries,
       s.image_entries + s.text_entries AS entries,
       coalesce(a.paired_texts, 0)      AS paired_texts,
       a.agreement
FROM sizes s
LEFT JOIN agreement a USING (run_id, prototype);

-- Bank entries whose nearest entry of another image is most similar: the soft positives.
CREATE VIEW amber.ambiguous_entries AS
SELECT b.run_id, b.modality, b.slot, b.item_id, i.external_id, i.caption,
       b.ambiguity,
       b.neighbour_item_id, n.modality AS neighbour_modality, n.external_id AS neighbour_external_id,
       n.caption AS neighbour_caption,
       b.prototype, b.enqueued_step, b.model_version
FROM amber.memory_bank b
JOIN amber.items i ON i.item_id = b.item_id
LEFT JOIN amber.items n ON n.item_id = b.neighbour_item_id
WHERE b.ambiguity IS NOT NULL
ORDER BY b.ambiguity DESC;

-- The k bank entries nearest (cosine) to the newest bank entry of an item, in the same run.
CREATE FUNCTION amber.bank_neighbours(target_item bigint, k integer DEFAULT 10)
RETURNS TABLE (neighbour_item_id bigint, modality amber.modality, external_id text, caption text,
               similarity double precision, same_image boolean, prototype integer, enqueued_step bigint)
    LANGUAGE sql STABLE AS $$
    WITH query AS (
        SELECT b.run_id, b.embedding, b.image_id
        FROM amber.memory_bank b
        WHERE b.item_id = target_item
        ORDER BY b.run_id DESC, b.enqueued_step DESC
        LIMIT 1
    )
    SELECT b.item_id, b.modality, i.external_id, i.caption,
           amber.cosine(q.embedding, b.embedding) AS similarity,
           b.image_id IS NOT DISTINCT FROM q.image_id,
           b.prototype, b.enqueued_step
    FROM query q
    JOIN amber.memory_bank b ON b.run_id = q.run_id AND b.item_id <> target_item
    JOIN amber.items i ON i.item_id = b.item_id
    ORDER BY similarity DESC NULLS LAST
    LIMIT k
$$;

-- The model the query service serves.
CREATE VIEW amber.serving_model AS
SELECT m.version, m.parent_version, m.run_id, m.step, m.metrics, m.created_at, s.changed_at AS promoted_at
FROM amber.serving s
JOIN amber.models m ON m.version = s.model_version;

-- Pairs each consumer has not taken in yet.
CREATE VIEW amber.ingest_backlog AS
SELECT c.consumer, c.last_pair_id, c.updated_at,
       count(p.pair_id)    AS pending_pairs,
       min(p.created_at)   AS oldest_pending_at
FROM amber.ingest_cursor c
LEFT JOIN amber.pairs p ON p.pair_id > c.last_pair_id
GROUP BY c.consumer, c.last_pair_id, c.updated_at;

-- What was ingested: items per modality and source, with and without features.
CREATE VIEW amber.catalog_overview AS
SELECT i.modality, i.source,
       count(*)                        AS items,
       count(f.item_id)                AS with_features,
       count(*) - count(f.item_id)     AS without_features,
       max(i.created_at)               AS last_ingested_at
FROM amber.items i
LEFT JOIN amber.features f USING (item_id)
GROUP BY i.modality, i.source;
