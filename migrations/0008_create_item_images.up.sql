-- A small JPEG per image item (the longer side at most 256 px), for results shown as pictures:
-- GET /v1/items/{id}/image. Written with the item's features, by ingest and by POST /v1/items.
CREATE TABLE amber.item_images (
    item_id    bigint PRIMARY KEY,
    modality   amber.modality NOT NULL DEFAULT 'image' CHECK (modality = 'image'),
    media_type text NOT NULL CHECK (media_type = 'image/jpeg'),
    width      integer NOT NULL CHECK (width BETWEEN 1 AND 4096),
    height     integer NOT NULL CHECK (height BETWEEN 1 AND 4096),
    bytes      bytea NOT NULL CHECK (length(bytes) BETWEEN 1 AND 4194304),
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (item_id, modality) REFERENCES amber.items (item_id, modality) ON DELETE CASCADE
);
COMMENT ON TABLE amber.item_images IS 'Thumbnail (JPEG, longer side <= 256 px) of an image item';
GRANT SELECT, INSERT, UPDATE, DELETE ON amber.item_images TO amber_app;
GRANT SELECT ON amber.item_images TO amber_auditor;
