-- What users of the search said about its results (POST /v1/feedback): the query (a stored item
-- or free text), the result they chose, the ones they rejected, and what became of it. A chosen
-- result of the other modality becomes a training pair (pair_id) unless an item of it is in the
-- dev or test split: those are never trained on, whoever names them.
CREATE TABLE amber.feedback (
    feedback_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    query_modality     amber.modality NOT NULL,
    query_item_id      bigint REFERENCES amber.items (item_id) ON DELETE SET NULL,
    query_text         text CHECK (query_text IS NULL OR length(query_text) BETWEEN 1 AND 10000),
    chosen_item_id     bigint NOT NULL REFERENCES amber.items (item_id) ON DELETE CASCADE,
    chosen_rank        integer CHECK (chosen_rank IS NULL OR chosen_rank BETWEEN 1 AND 10000),
    rejected_item_ids  bigint[] NOT NULL DEFAULT '{}' CHECK (cardinality(rejected_item_ids) <= 100),
    model_version      bigint CHECK (model_version IS NULL OR model_version >= 1),
    client             text CHECK (client IS NULL OR length(client) BETWEEN 1 AND 200),
    pair_id            bigint REFERENCES amber.pairs (pair_id) ON DELETE SET NULL,
    not_paired_because text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT one_query CHECK (query_item_id IS NULL OR query_text IS NULL),
    CONSTRAINT text_queries_are_texts CHECK (query_text IS NULL OR query_modality = 'text')
);
CREATE INDEX feedback_created ON amber.feedback (created_at);
CREATE INDEX feedback_chosen ON amber.feedback (chosen_item_id);
COMMENT ON TABLE amber.feedback IS 'A search result a user chose (and ones they rejected), with provenance; pair_id: the training pair it became';

-- Volume and effect per day: how much feedback, how much of it became training pairs, and where
-- the chosen results stood in the ranking users saw (falling ranks: the models learn from it).
CREATE VIEW amber.feedback_overview AS
SELECT date_trunc('day', created_at) AS day,
       count(*) AS feedback,
       count(pair_id) AS pairs_added,
       count(*) FILTER (WHERE pair_id IS NULL) AS not_paired,
       sum(cardinality(rejected_item_ids)) AS rejected,
       round(avg(chosen_rank), 2) AS mean_chosen_rank,
       round(avg((chosen_rank = 1)::int), 3) AS chosen_first_share,
       count(DISTINCT chosen_item_id) AS distinct_chosen
FROM amber.feedback GROUP BY 1;
COMMENT ON VIEW amber.feedback_overview IS 'Feedback per day: volume, pairs it added, rejected results, mean rank of the chosen result';

-- The same by the model version that ranked the results.
CREATE VIEW amber.feedback_by_model AS
SELECT model_version, count(*) AS feedback, round(avg(chosen_rank), 2) AS mean_chosen_rank,
       round(avg((chosen_rank = 1)::int), 3) AS chosen_first_share, min(created_at) AS first, max(created_at) AS last
FROM amber.feedback GROUP BY model_version;

-- Every rejected result with its query and the result chosen instead: the near-misses users named.
CREATE VIEW amber.feedback_rejections AS
SELECT f.feedback_id, f.query_modality, f.query_item_id, coalesce(f.query_text, q.caption) AS query_caption,
       f.chosen_item_id, c.external_id AS chosen_external_id, r.item_id AS rejected_item_id,
       ri.external_id AS rejected_external_id, ri.caption AS rejected_caption, f.created_at
FROM amber.feedback f
CROSS JOIN LATERAL unnest(f.rejected_item_ids) AS r(item_id)
LEFT JOIN amber.items q ON q.item_id = f.query_item_id
JOIN amber.items c ON c.item_id = f.chosen_item_id
LEFT JOIN amber.items ri ON ri.item_id = r.item_id;

-- Append-only for the service: what users said is not rewritten.
REVOKE ALL ON amber.feedback FROM amber_app, amber_auditor;
GRANT SELECT, INSERT ON amber.feedback TO amber_app;
GRANT SELECT ON amber.feedback, amber.feedback_overview, amber.feedback_by_model, amber.feedback_rejections TO amber_auditor;
GRANT SELECT ON amber.feedback_overview, amber.feedback_by_model, amber.feedback_rejections TO amber_app;
