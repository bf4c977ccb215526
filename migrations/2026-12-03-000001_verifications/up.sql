-- Verification (docs/verification.md): spot-checks that a miner's endpoint serves the policy of its
-- committed HuggingFace revision, their records, the scheduler's re-verification flag on tasks and
-- the `excluded` miner status of the `exclude` policy.

CREATE TABLE verifications (
    id           BIGSERIAL PRIMARY KEY,
    uid          INTEGER NOT NULL CHECK (uid BETWEEN 0 AND 65535),
    hotkey       VARCHAR(64) NOT NULL,
    repo         VARCHAR(256) NOT NULL,
    revision     VARCHAR(64) NOT NULL,
    endpoint     TEXT NOT NULL,
    outcome      VARCHAR(16) NOT NULL
                 CHECK (outcome IN ('passed', 'mismatch', 'invalid', 'unverifiable')),
    match_score  DOUBLE PRECISION,
    -- How the samples were drawn and how each one scored:
    -- {"source", "seed", "count", "scores": [..]}.
    samples      JSONB NOT NULL,
    error        TEXT,
    executor_id  VARCHAR(64) NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_verifications_uid ON verifications (uid, created_at DESC);
CREATE INDEX idx_verifications_pair ON verifications (hotkey, revision, created_at DESC);

ALTER TABLE task_pool ADD COLUMN verify BOOLEAN NOT NULL DEFAULT false;

ALTER TABLE miners DROP CONSTRAINT miners_status_check;
ALTER TABLE miners ADD CONSTRAINT miners_status_check
    CHECK (status IN ('active', 'inactive', 'invalid_commitment', 'excluded'));
