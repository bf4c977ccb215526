-- kinitro schema (spec: database.md 2). Column names and JSON shapes are part of the API contract.

CREATE TABLE evaluation_cycles (
    id               SERIAL PRIMARY KEY,
    block_number     BIGINT NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at     TIMESTAMPTZ,
    status           VARCHAR(20) NOT NULL DEFAULT 'running'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    n_miners         INTEGER,
    n_environments   INTEGER,
    duration_seconds DOUBLE PRECISION,
    error_message    TEXT,
    env_ids          JSONB NOT NULL DEFAULT '[]',
    episodes_per_env INTEGER NOT NULL,
    pareto_frontier  JSONB,
    registry_source  VARCHAR(16) NOT NULL CHECK (registry_source IN ('chain', 'file'))
);
CREATE INDEX ix_evaluation_cycles_block_number ON evaluation_cycles (block_number);
CREATE INDEX idx_cycles_status ON evaluation_cycles (status);
-- At most one running cycle: a second insert fails instead of creating parallel cycles.
CREATE UNIQUE INDEX one_running_cycle ON evaluation_cycles (status) WHERE status = 'running';

CREATE TABLE miners (
    id            SERIAL PRIMARY KEY,
    cycle_id      INTEGER NOT NULL REFERENCES evaluation_cycles (id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL CHECK (uid BETWEEN 0 AND 65535),
    hotkey        VARCHAR(64) NOT NULL,
    commitment    TEXT,
    repo          VARCHAR(256),
    revision      VARCHAR(64),
    endpoint      TEXT,
    encrypted     BOOLEAN NOT NULL DEFAULT false,
    commit_block  BIGINT,
    status        VARCHAR(32) NOT NULL CHECK (status IN ('active', 'inactive', 'invalid_commitment')),
    status_reason TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_miners_cycle_uid ON miners (cycle_id, uid);
CREATE INDEX idx_miners_uid ON miners (uid);
CREATE INDEX idx_miners_hotkey ON miners (hotkey);

CREATE TABLE task_pool (
    id                     BIGSERIAL PRIMARY KEY,
    task_uuid              VARCHAR(36) NOT NULL UNIQUE,
    cycle_id               INTEGER NOT NULL REFERENCES evaluation_cycles (id) ON DELETE CASCADE,
    miner_uid              INTEGER NOT NULL,
    miner_hotkey           VARCHAR(64) NOT NULL,
    miner_endpoint         TEXT NOT NULL,
    miner_repo             VARCHAR(256),
    miner_revision         VARCHAR(64),
    env_id                 VARCHAR(64) NOT NULL,
    seed                   INTEGER NOT NULL CHECK (seed >= 0),
    sim_seed               BIGINT NOT NULL,
    status                 VARCHAR(20) NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'assigned', 'completed', 'failed', 'cancelled')),
    attempts               INTEGER NOT NULL DEFAULT 0,
    max_attempts           INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    assigned_to            VARCHAR(64),
    assigned_at            TIMESTAMPTZ,
    completed_at           TIMESTAMPTZ,
    result                 JSONB,
    last_submitted_by      VARCHAR(64),
    last_submitted_attempt INTEGER,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_task_pool_status ON task_pool (status);
CREATE INDEX idx_task_pool_cycle ON task_pool (cycle_id);
CREATE INDEX idx_task_pool_miner ON task_pool (miner_uid);
CREATE INDEX idx_task_pool_cycle_status ON task_pool (cycle_id, status);
-- The claim scans pending rows in id order through this index, so its cost does not grow with the
-- rows already handed out (database.md 6.1).
CREATE INDEX idx_task_pool_pending ON task_pool (id) WHERE status = 'pending';
CREATE INDEX idx_task_pool_assigned ON task_pool (assigned_at) WHERE status = 'assigned';

CREATE TABLE miner_scores (
    id                 SERIAL PRIMARY KEY,
    cycle_id           INTEGER NOT NULL REFERENCES evaluation_cycles (id) ON DELETE CASCADE,
    uid                INTEGER NOT NULL,
    hotkey             VARCHAR(64) NOT NULL,
    env_id             VARCHAR(64) NOT NULL,
    success_rate       DOUBLE PRECISION NOT NULL,
    mean_reward        DOUBLE PRECISION NOT NULL,
    episodes_completed INTEGER NOT NULL,
    episodes_failed    INTEGER NOT NULL,
    episodes_excluded  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX idx_miner_scores_cycle ON miner_scores (cycle_id);
CREATE INDEX idx_miner_scores_uid ON miner_scores (uid);
CREATE UNIQUE INDEX idx_miner_scores_unique ON miner_scores (cycle_id, uid, env_id);

CREATE TABLE computed_weights (
    id               SERIAL PRIMARY KEY,
    cycle_id         INTEGER NOT NULL UNIQUE REFERENCES evaluation_cycles (id) ON DELETE CASCADE,
    block_number     BIGINT NOT NULL,
    weights_json     JSONB NOT NULL,
    weights_u16_json JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_weights_block ON computed_weights (block_number);

CREATE TABLE scheduler_state (
    id                         SMALLINT PRIMARY KEY CHECK (id = 1),
    current_block              BIGINT,
    chain_ok                   BOOLEAN NOT NULL,
    chain_error                TEXT,
    registry_source            VARCHAR(16) NOT NULL,
    env_ids                    JSONB NOT NULL,
    eval_interval_seconds      INTEGER NOT NULL,
    heartbeat_interval_seconds INTEGER NOT NULL,
    next_cycle_at              TIMESTAMPTZ,
    heartbeat_at               TIMESTAMPTZ NOT NULL
);

CREATE TABLE scheduler_secret (
    id          SMALLINT PRIMARY KEY CHECK (id = 1),
    seed_secret BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
