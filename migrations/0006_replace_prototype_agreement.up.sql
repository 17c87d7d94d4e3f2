-- prototype_overview counted a caption once per bank entry of its image (an image enqueued at
-- several steps has several slots), so paired_texts grew with the queue and the agreement mixed
-- old and new assignments. Now each caption entry is compared with its image's newest entry.
CREATE OR REPLACE VIEW amber.prototype_overview AS
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
    CROSS JOIN LATERAL (
        SELECT newest.prototype
        FROM amber.memory_bank newest
        WHERE newest.run_id = t.run_id AND newest.modality = 'image' AND newest.item_id = t.image_id
        ORDER BY newest.enqueued_step DESC, newest.slot DESC
        LIMIT 1
    ) i
    WHERE t.modality = 'text' AND t.prototype IS NOT NULL
    GROUP BY t.run_id, t.prototype
)
SELECT s.run_id, s.prototype, s.image_entries, s.text_entries,
       s.image_entries + s.text_entries AS entries,
       coalesce(a.paired_texts, 0)      AS paired_texts,
       a.agreement
FROM sizes s
LEFT JOIN agreement a USING (run_id, prototype);
