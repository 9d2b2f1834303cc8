-- The outbox: every domain event, written in the same transaction as the change it describes.
-- The outbox service delivers pending events to the webhook URLs (at least once; `delivered_to`
-- lists the URLs that acknowledged, so a retry goes only to the others); the live SSE stream
-- reads the same rows by id. `payload` is a JSON object as text.
CREATE TABLE outbox_events (
    id              BIGSERIAL PRIMARY KEY,
    event_type      TEXT NOT NULL,
    league          TEXT,
    payload         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    delivered_to    TEXT NOT NULL DEFAULT '[]',
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ
);
CREATE INDEX outbox_due ON outbox_events (state, next_attempt_at);
CREATE INDEX outbox_created ON outbox_events (created_at);
